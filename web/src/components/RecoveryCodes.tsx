import { Button, Checkbox, Code, Group, SimpleGrid, Stack, Text } from "@mantine/core";
import { useClipboard } from "@mantine/hooks";
import { useState } from "react";
import { t } from "../strings";
import { FocusHeading } from "./FocusHeading";

/** Recovery codes, shown once: copy, download, and an "I have saved them" step before going on. */
export function RecoveryCodes({ codes, onDone }: { codes: string[]; onDone: () => void }) {
  const clipboard = useClipboard({ timeout: 2000 });
  const [saved, setSaved] = useState(false);
  const text = codes.join("\n") + "\n";
  const download = () => {
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = t.recovery.filename;
    a.click();
    URL.revokeObjectURL(url);
  };
  return (
    <Stack>
      <FocusHeading order={3}>{t.recovery.title}</FocusHeading>
      <Text>{t.recovery.intro}</Text>
      <SimpleGrid cols={{ base: 1, xs: 2 }} spacing="xs" component="ul" aria-label={t.recovery.title} style={{ listStyle: "none", padding: 0 }}>
        {codes.map((code) => (
          <li key={code}>
            <Code fz="md" data-testid="recovery-code">{code}</Code>
          </li>
        ))}
      </SimpleGrid>
      <Group>
        <Button variant="default" onClick={() => clipboard.copy(text)}>
          {clipboard.copied ? t.common.copied : t.recovery.copy}
        </Button>
        <Button variant="default" onClick={download}>
          {t.recovery.download}
        </Button>
      </Group>
      <Checkbox label={t.recovery.saved} checked={saved} onChange={(e) => setSaved(e.currentTarget.checked)} />
      <Button disabled={!saved} onClick={onDone}>
        {t.common.continue}
      </Button>
    </Stack>
  );
}
