import { Badge, Button, Card, Code, Group, Modal, NativeSelect, Stack, Table, Tabs, Text, TextInput, Title } from "@mantine/core";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import { When } from "../components/Dates";
import { FocusHeading } from "../components/FocusHeading";
import { Notice, ProblemAlert } from "../components/ProblemAlert";
import { useStepUp } from "../components/StepUp";
import { t } from "../strings";
import { eventName, eventTypeChoices, factorStatusName, outcomeName } from "../wording";
import { factorName } from "./SignInFlow";

const PAGE_SIZE = 20;

/** Cursor paging: the cursors of the pages before this one, so "previous" can go back. */
function useCursor() {
  const [stack, setStack] = useState<string[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  return {
    cursor,
    page: stack.length + 1,
    next: (nextCursor: string) => { setStack([...stack, cursor ?? ""]); setCursor(nextCursor); },
    previous: () => { const before = stack.slice(0, -1); setCursor(stack.at(-1) || null); setStack(before); },
    reset: () => { setStack([]); setCursor(null); },
  };
}

function Pager({ page, hasPrevious, nextCursor, onNext, onPrevious }: { page: number; hasPrevious: boolean; nextCursor: string | null | undefined; onNext: (c: string) => void; onPrevious: () => void }) {
  return (
    <Group justify="space-between">
      <Button variant="default" disabled={!hasPrevious} onClick={onPrevious}>{t.common.previous}</Button>
      <Text size="sm" aria-live="polite">{t.common.page(page)}</Text>
      <Button variant="default" disabled={!nextCursor} onClick={() => nextCursor && onNext(nextCursor)}>{t.common.next}</Button>
    </Group>
  );
}

export function Admin() {
  const [params, setParams] = useSearchParams();
  const tab = params.get("tab") === "audit" ? "audit" : "users";
  return (
    <Stack>
      <FocusHeading order={1}>{t.admin.title}</FocusHeading>
      <Tabs value={tab} onChange={(v) => setParams(v === "audit" ? { tab: "audit" } : {})}>
        <Tabs.List>
          <Tabs.Tab value="users">{t.admin.users}</Tabs.Tab>
          <Tabs.Tab value="audit">{t.admin.audit}</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="users" pt="md">{tab === "users" && <Users />}</Tabs.Panel>
        <Tabs.Panel value="audit" pt="md">{tab === "audit" && <Audit userId={params.get("user_id") ?? ""} />}</Tabs.Panel>
      </Tabs>
    </Stack>
  );
}

function Users() {
  const [draft, setDraft] = useState("");
  const [query, setQuery] = useState("");
  const paging = useCursor();
  const users = useQuery({
    queryKey: ["admin-users", query, paging.cursor],
    queryFn: () =>
      unwrap(api.GET("/api/v1/admin/users", { params: { query: { query: query || undefined, limit: PAGE_SIZE, cursor: paging.cursor ?? undefined } } })),
  });
  return (
    <Stack>
      <form role="search" onSubmit={(e) => { e.preventDefault(); paging.reset(); setQuery(draft.trim()); }}>
        <Group align="end">
          <TextInput label={t.admin.search} value={draft} onChange={(e) => setDraft(e.currentTarget.value)} style={{ flex: 1 }} />
          <Button type="submit">{t.admin.searchSubmit}</Button>
        </Group>
      </form>
      <ProblemAlert error={users.error} />
      {users.isPending && <Text>{t.common.loading}</Text>}
      <Table.ScrollContainer minWidth={520}>
        <Table striped highlightOnHover>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t.admin.email}</Table.Th>
              <Table.Th>{t.admin.created}</Table.Th>
              <Table.Th>{t.admin.roles}</Table.Th>
              <Table.Th>{t.admin.state}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {(users.data?.users ?? []).map((u) => (
              <Table.Tr key={u.id}>
                <Table.Td><Link to={`/admin/users/${u.id}`}>{u.email}</Link></Table.Td>
                <Table.Td><When at={u.created_at} /></Table.Td>
                <Table.Td>{u.roles.join(", ")}</Table.Td>
                <Table.Td>{u.locked ? <Badge color="red">{t.admin.locked}</Badge> : <Badge color="green">{t.admin.active}</Badge>}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      <Pager page={paging.page} hasPrevious={paging.page > 1} nextCursor={users.data?.next_cursor} onNext={paging.next} onPrevious={paging.previous} />
    </Stack>
  );
}

export function AdminUser() {
  const { userId = "" } = useParams();
  const queryClient = useQueryClient();
  const withStepUp = useStepUp();
  const navigate = useNavigate();
  const [confirmReset, setConfirmReset] = useState(false);
  const user = useQuery({
    queryKey: ["admin-user", userId],
    queryFn: () => unwrap(api.GET("/api/v1/admin/users/{user_id}", { params: { path: { user_id: userId } } })),
  });
  const act = useMutation({
    mutationFn: (action: "lock" | "unlock" | "reset") =>
      withStepUp(() => {
        const path = { params: { path: { user_id: userId } } };
        if (action === "lock") return unwrap(api.POST("/api/v1/admin/users/{user_id}/lock", path));
        if (action === "unlock") return unwrap(api.POST("/api/v1/admin/users/{user_id}/unlock", path));
        return unwrap(api.DELETE("/api/v1/admin/users/{user_id}/factors", path));
      }),
    onSuccess: () => void queryClient.invalidateQueries(),
  });
  const u = user.data;
  return (
    <Stack>
      <Group>
        <Button variant="subtle" component={Link} to="/admin">{t.common.back}</Button>
      </Group>
      <FocusHeading order={1}>{u?.email ?? t.admin.detail}</FocusHeading>
      <ProblemAlert error={user.error ?? act.error} />
      {act.isSuccess && <Notice>{t.admin.done}</Notice>}
      {u && (
        <Card withBorder>
          <Stack>
            {u.locked && <Notice>{t.admin.lockedNotice}</Notice>}
            <Text>id: <Code>{u.id}</Code></Text>
            <Text>{t.admin.created}: <When at={u.created_at} /></Text>
            <Text>{t.admin.roles}: {u.roles.join(", ") || "—"}</Text>
            <Text>{t.admin.mfaEnabled}: {u.mfa_enabled ? t.admin.yes : t.admin.no}</Text>
            <Title order={2} size="h4">{t.security.factors}</Title>
            {u.factors.length === 0 && <Text c="dimmed">{t.common.none}</Text>}
            <ul>
              {u.factors.map((f) => (
                <li key={f.id}>{factorName(f)} — {factorStatusName(f.status)}, {t.security.lastUsed.toLowerCase()}: <When at={f.last_used_at} /></li>
              ))}
            </ul>
            <Group>
              {u.locked ? (
                <Button onClick={() => act.mutate("unlock")} loading={act.isPending}>{t.admin.unlock}</Button>
              ) : (
                <Button color="red" onClick={() => act.mutate("lock")} loading={act.isPending}>{t.admin.lock}</Button>
              )}
              <Button color="orange" variant="light" onClick={() => setConfirmReset(true)}>{t.admin.resetMfa}</Button>
              <Button variant="default" onClick={() => navigate(`/admin?tab=audit&user_id=${u.id}`)}>{t.admin.audit}</Button>
            </Group>
          </Stack>
        </Card>
      )}
      <Modal opened={confirmReset} onClose={() => setConfirmReset(false)} title={t.admin.resetMfa} centered>
        <Stack>
          <Text>{t.admin.resetMfaConfirm}</Text>
          <Group justify="end">
            <Button variant="default" onClick={() => setConfirmReset(false)}>{t.common.cancel}</Button>
            <Button color="orange" onClick={() => { setConfirmReset(false); act.mutate("reset"); }}>{t.admin.resetMfa}</Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  );
}

function Audit({ userId: initialUser }: { userId: string }) {
  const [userDraft, setUserDraft] = useState(initialUser);
  const [typeDraft, setTypeDraft] = useState("");
  const [filters, setFilters] = useState({ user_id: initialUser, type: "" });
  const paging = useCursor();
  const events = useQuery({
    queryKey: ["admin-audit", filters, paging.cursor],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/admin/audit", {
          params: { query: { user_id: filters.user_id || undefined, type: filters.type || undefined, limit: PAGE_SIZE, cursor: paging.cursor ?? undefined } },
        }),
      ),
  });
  return (
    <Stack>
      <form onSubmit={(e) => { e.preventDefault(); paging.reset(); setFilters({ user_id: userDraft.trim(), type: typeDraft }); }}>
        <Group align="end" wrap="wrap">
          <TextInput label={t.admin.userIdFilter} value={userDraft} onChange={(e) => setUserDraft(e.currentTarget.value)} />
          <NativeSelect
            label={t.admin.typeFilter}
            data={[{ value: "", label: t.admin.anyType }, ...eventTypeChoices()]}
            value={typeDraft}
            onChange={(e) => setTypeDraft(e.currentTarget.value)}
          />
          <Button type="submit">{t.admin.filter}</Button>
        </Group>
      </form>
      <ProblemAlert error={events.error} />
      {events.isPending && <Text>{t.common.loading}</Text>}
      <Table.ScrollContainer minWidth={640}>
        <Table striped>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{t.security.when}</Table.Th>
              <Table.Th>{t.security.event}</Table.Th>
              <Table.Th>{t.security.outcome}</Table.Th>
              <Table.Th>{t.admin.actor}</Table.Th>
              <Table.Th>{t.admin.subject}</Table.Th>
              <Table.Th>{t.security.ip}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {(events.data?.events ?? []).map((e) => (
              <Table.Tr key={e.id}>
                <Table.Td><When at={e.at} /></Table.Td>
                <Table.Td>
                  {eventName(e.type)}
                  <Text size="xs" c="dimmed"><Code>{e.type}</Code></Text>
                </Table.Td>
                <Table.Td>{outcomeName(e.outcome)}</Table.Td>
                <Table.Td>{e.actor_id ? <Link to={`/admin/users/${e.actor_id}`}>{e.actor_id.slice(0, 8)}</Link> : "—"}</Table.Td>
                <Table.Td>{e.subject_id ? <Link to={`/admin/users/${e.subject_id}`}>{e.subject_id.slice(0, 8)}</Link> : "—"}</Table.Td>
                <Table.Td>{e.ip ?? ""}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      <Pager page={paging.page} hasPrevious={paging.page > 1} nextCursor={events.data?.next_cursor} onNext={paging.next} onPrevious={paging.previous} />
    </Stack>
  );
}
