import { Badge, Button, Card, Group, PasswordInput, Stack, Table, Text, Title } from "@mantine/core";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate } from "react-router";
import { api, session, unwrap } from "../api/client";
import { When } from "../components/Dates";
import { FocusHeading } from "../components/FocusHeading";
import { Notice, ProblemAlert } from "../components/ProblemAlert";
import { RecoveryCodes } from "../components/RecoveryCodes";
import { useStepUp } from "../components/StepUp";
import { useMe } from "../session";
import { t } from "../strings";
import { eventName, factorStatusName, outcomeName } from "../wording";
import { factorName } from "./SignInFlow";

function Section({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <Card withBorder padding="md" component="section" aria-label={title}>
      <Stack gap="sm">
        <Title order={2} size="h3">
          {title}
        </Title>
        {children}
      </Stack>
    </Card>
  );
}

/** A table that scrolls sideways on a narrow screen instead of squeezing its columns; while its
 * data loads it says so (not "nothing here", which would be untrue for a moment). */
function Rows({ head, children, empty, loading }: { head: string[]; children: React.ReactNode[]; empty: boolean; loading: boolean }) {
  if (loading) return <Text c="dimmed">{t.common.loading}</Text>;
  if (empty) return <Text c="dimmed">{t.common.none}</Text>;
  return (
    <Table.ScrollContainer minWidth={520}>
      <Table striped>
        <Table.Thead>
          <Table.Tr>{head.map((h) => <Table.Th key={h}>{h}</Table.Th>)}</Table.Tr>
        </Table.Thead>
        <Table.Tbody>{children}</Table.Tbody>
      </Table>
    </Table.ScrollContainer>
  );
}

export function Security() {
  const me = useMe();
  const queryClient = useQueryClient();
  const withStepUp = useStepUp();
  const navigate = useNavigate();
  const [codes, setCodes] = useState<string[] | null>(null);
  const factors = useQuery({ queryKey: ["factors"], queryFn: () => unwrap(api.GET("/api/v1/me/factors")) });
  const devices = useQuery({ queryKey: ["devices"], queryFn: () => unwrap(api.GET("/api/v1/me/devices")) });
  const sessions = useQuery({ queryKey: ["sessions"], queryFn: () => unwrap(api.GET("/api/v1/me/sessions")) });
  const events = useQuery({ queryKey: ["events"], queryFn: () => unwrap(api.GET("/api/v1/me/events")) });
  const refreshAll = () => void queryClient.invalidateQueries();

  const change = useMutation({
    mutationFn: (work: () => Promise<unknown>) => withStepUp(work),
    onSuccess: refreshAll,
  });
  const removeFactor = (id: string) =>
    change.mutate(() => unwrap(api.DELETE("/api/v1/me/factors/{factor_id}", { params: { path: { factor_id: id } } })));
  const forgetDevice = (id: string) =>
    change.mutate(() => unwrap(api.DELETE("/api/v1/me/devices/{device_id}", { params: { path: { device_id: id } } })));
  const revokeSession = (id: string, current: boolean) =>
    change.mutate(
      () => unwrap(api.DELETE("/api/v1/me/sessions/{session_id}", { params: { path: { session_id: id } } })),
      {
        onSuccess: () => {
          if (current) {
            session.end("signed_out");
            navigate("/sign-in", { state: { notice: "signed_out" } });
          }
        },
      },
    );
  const regenerate = () =>
    change.mutate(() => unwrap(api.POST("/api/v1/me/recovery-codes")), {
      onSuccess: (data) => setCodes((data as { recovery_codes: string[] }).recovery_codes),
    });

  const loadError = me.error ?? factors.error ?? devices.error ?? sessions.error ?? events.error;
  const activeFactors = factors.data?.factors ?? [];

  return (
    <Stack>
      <FocusHeading order={1}>{t.security.title}</FocusHeading>
      {me.data && <Text>{t.security.signedInAs(me.data.email)}</Text>}
      <ProblemAlert error={loadError ?? change.error} />

      <Section title={t.security.factors}>
        <Rows head={[t.security.type, t.security.status, t.security.added, t.security.lastUsed, ""]} empty={activeFactors.length === 0} loading={factors.isPending}>
          {activeFactors.map((f) => (
            <Table.Tr key={f.id}>
              <Table.Td>{factorName(f)}</Table.Td>
              <Table.Td>
                <Badge color={f.status === "active" ? "green" : "gray"}>{factorStatusName(f.status)}</Badge>
              </Table.Td>
              <Table.Td><When at={f.created_at} /></Table.Td>
              <Table.Td><When at={f.last_used_at} /></Table.Td>
              <Table.Td>
                <Button size="xs" color="red" variant="light" aria-label={t.security.removeLabel(factorName(f))} onClick={() => removeFactor(f.id)}>
                  {t.security.remove}
                </Button>
              </Table.Td>
            </Table.Tr>
          ))}
        </Rows>
        <Group>
          <Button component={Link} to="/setup" variant="default">
            {t.security.addFactor}
          </Button>
        </Group>
      </Section>

      <Section title={t.recovery.title}>
        {codes ? (
          <RecoveryCodes codes={codes} onDone={() => setCodes(null)} />
        ) : (
          <Group>
            <Text size="sm">{t.recovery.regenerateHint}</Text>
            <Button variant="default" onClick={regenerate}>
              {t.recovery.regenerate}
            </Button>
          </Group>
        )}
      </Section>

      <Section title={t.security.devices}>
        <Rows head={[t.security.device, t.security.ip, t.security.added, t.security.lastUsed, ""]} empty={(devices.data?.devices ?? []).length === 0} loading={devices.isPending}>
          {(devices.data?.devices ?? []).map((d) => (
            <Table.Tr key={d.id}>
              <Table.Td>{d.user_agent ?? "?"}</Table.Td>
              <Table.Td>{d.ip ?? ""}</Table.Td>
              <Table.Td><When at={d.created_at} /></Table.Td>
              <Table.Td><When at={d.last_used_at} /></Table.Td>
              <Table.Td>
                <Button size="xs" variant="light" aria-label={t.security.forgetLabel(d.user_agent ?? d.id)} onClick={() => forgetDevice(d.id)}>
                  {t.security.forget}
                </Button>
              </Table.Td>
            </Table.Tr>
          ))}
        </Rows>
      </Section>

      <Section title={t.security.sessions}>
        <Rows head={[t.security.device, t.security.ip, t.security.started, t.security.lastSeen, ""]} empty={(sessions.data?.sessions ?? []).length === 0} loading={sessions.isPending}>
          {(sessions.data?.sessions ?? []).map((s) => (
            <Table.Tr key={s.id}>
              <Table.Td>
                {s.user_agent ?? "?"} {s.current && <Badge ml="xs">{t.security.current}</Badge>}
              </Table.Td>
              <Table.Td>{s.ip ?? ""}</Table.Td>
              <Table.Td><When at={s.created_at} /></Table.Td>
              <Table.Td><When at={s.last_seen_at} /></Table.Td>
              <Table.Td>
                <Button size="xs" variant="light" color="red" aria-label={t.security.revokeLabel(s.user_agent ?? s.id)} onClick={() => revokeSession(s.id, s.current)}>
                  {t.security.revoke}
                </Button>
              </Table.Td>
            </Table.Tr>
          ))}
        </Rows>
      </Section>

      <PasswordChange />

      <Section title={t.security.events}>
        <Rows head={[t.security.event, t.security.when, t.security.outcome, t.security.ip]} empty={(events.data?.events ?? []).length === 0} loading={events.isPending}>
          {(events.data?.events ?? []).slice(0, 20).map((e) => (
            <Table.Tr key={e.id}>
              <Table.Td title={e.type}>
                {eventName(e.type)}
                {e.actor?.role === "admin" ? ` (${t.security.byAdmin})` : ""}
              </Table.Td>
              <Table.Td><When at={e.at} /></Table.Td>
              <Table.Td>{outcomeName(e.outcome)}</Table.Td>
              <Table.Td>{e.ip ?? ""}</Table.Td>
            </Table.Tr>
          ))}
        </Rows>
      </Section>
    </Stack>
  );
}

function PasswordChange() {
  const withStepUp = useStepUp();
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const change = useMutation({
    mutationFn: () => withStepUp(() => unwrap(api.POST("/api/v1/me/password", { body: { current_password: current, new_password: next } }))),
    onSuccess: () => {
      setCurrent("");
      setNext("");
    },
  });
  return (
    <Section title={t.security.password}>
      <form onSubmit={(e) => { e.preventDefault(); change.mutate(); }} noValidate>
        <Stack>
          <ProblemAlert error={change.error} />
          {change.isSuccess && <Notice>{t.security.changed}</Notice>}
          <PasswordInput label={t.security.currentPassword} autoComplete="current-password" value={current} onChange={(e) => setCurrent(e.currentTarget.value)} />
          <PasswordInput label={t.security.newPassword} autoComplete="new-password" value={next} onChange={(e) => setNext(e.currentTarget.value)} />
          <Group>
            <Button type="submit" variant="default" loading={change.isPending}>
              {t.security.password}
            </Button>
          </Group>
        </Stack>
      </form>
    </Section>
  );
}
