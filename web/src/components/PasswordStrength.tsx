import { Progress, Text } from "@mantine/core";
import { useEffect, useState } from "react";
import { t } from "../strings";

type Scorer = (password: string, userInputs: string[]) => { score: number; feedback: { warning: string | null; suggestions: string[] } };

let scorer: Promise<Scorer> | null = null;

/** zxcvbn-ts with its dictionaries, loaded on first use (they are most of its weight). */
function loadScorer(): Promise<Scorer> {
  scorer ??= Promise.all([
    import("@zxcvbn-ts/core"),
    import("@zxcvbn-ts/language-common"),
    import("@zxcvbn-ts/language-en"),
  ]).then(([core, common, en]) => {
    const options = {
      translations: en.translations,
      graphs: common.adjacencyGraphs,
      dictionary: { ...common.dictionary, ...en.dictionary },
    };
    const factory = new core.ZxcvbnFactory(options);
    return (password: string, userInputs: string[]) => factory.check(password, userInputs);
  });
  return scorer;
}

const COLORS = ["red", "orange", "yellow", "teal", "green"];

/** A meter of how guessable the password is; the service's policy has the last word. */
export function PasswordStrength({ password, userInputs }: { password: string; userInputs: string[] }) {
  const [result, setResult] = useState<{ score: number; hint: string } | null>(null);
  const inputs = userInputs.join("\n");
  useEffect(() => {
    let live = true;
    if (!password) {
      setResult(null);
      return;
    }
    void loadScorer().then((check) => {
      if (!live) return;
      const r = check(password, inputs.split("\n").filter(Boolean));
      setResult({ score: r.score, hint: r.feedback.warning || r.feedback.suggestions[0] || "" });
    });
    return () => {
      live = false;
    };
  }, [password, inputs]);
  if (!password) return null;
  const score = result?.score ?? 0;
  const label = result ? t.strength.levels[score] : t.strength.checking;
  return (
    <div>
      <Progress
        value={((score + 1) / 5) * 100}
        color={COLORS[score]}
        aria-label={t.strength.label}
        aria-valuetext={label}
        size="sm"
      />
      <Text size="sm" aria-live="polite" data-testid="strength">
        {t.strength.label}: {label}
        {result?.hint ? ` — ${result.hint}` : ""}
      </Text>
    </div>
  );
}
