import { Anchor, AppShell, Burger, Button, Container, Group, Loader, Stack, Text } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { Link, Navigate, Outlet, Route, Routes, useNavigate } from "react-router";
import { resume, signOut } from "./api/client";
import { StepUpProvider } from "./components/StepUp";
import { Admin, AdminUser } from "./pages/Admin";
import { ForgotPassword, ResetPassword } from "./pages/ForgotPassword";
import { Security } from "./pages/Security";
import { Setup } from "./pages/Setup";
import { SignIn } from "./pages/SignIn";
import { SignUp } from "./pages/SignUp";
import { useMe, useSession } from "./session";
import { t } from "./strings";

function Shell() {
  const current = useSession();
  const me = useMe();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [opened, { toggle, close }] = useDisclosure(false);
  const isAdmin = me.data?.roles.includes("admin") ?? false;
  const out = async () => {
    close();
    await signOut();
    queryClient.clear();
    navigate("/sign-in", { state: { notice: "signed_out" } });
  };
  const links = current ? (
    <>
      {!current.enrolmentOnly && <Anchor component={Link} to="/security" onClick={close}>{t.nav.security}</Anchor>}
      {isAdmin && !current.enrolmentOnly && <Anchor component={Link} to="/admin" onClick={close}>{t.nav.admin}</Anchor>}
      <Button variant="default" size="xs" onClick={() => void out()}>{t.nav.signOut}</Button>
    </>
  ) : (
    <>
      <Anchor component={Link} to="/sign-in" onClick={close}>{t.nav.signIn}</Anchor>
      <Anchor component={Link} to="/sign-up" onClick={close}>{t.nav.signUp}</Anchor>
    </>
  );
  return (
    <AppShell header={{ height: 56 }} navbar={{ width: 220, breakpoint: "sm", collapsed: { desktop: true, mobile: !opened } }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Text fw={700} component={Link} to="/">{t.appName}</Text>
          <Group gap="md" visibleFrom="sm" component="nav" aria-label={t.nav.main}>{links}</Group>
          <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label={t.nav.main} />
        </Group>
      </AppShell.Header>
      {opened && (
        // The phone-width menu: only in the page while open, so it never doubles the header's links.
        <AppShell.Navbar p="md">
          <Stack component="nav" aria-label={t.nav.main}>{links}</Stack>
        </AppShell.Navbar>
      )}
      <AppShell.Main>
        <Container size="md" px={0}>
          <StepUpProvider email={me.data?.email ?? null}>
            <Outlet />
          </StepUpProvider>
        </Container>
      </AppShell.Main>
    </AppShell>
  );
}

function RequireSession({ admin = false }: { admin?: boolean }) {
  const current = useSession();
  const me = useMe();
  if (!current) return <Navigate to="/sign-in" replace />;
  if (current.enrolmentOnly && !admin) return <Outlet />;
  if (admin && me.data && !me.data.roles.includes("admin")) return <Navigate to="/security" replace />;
  return <Outlet />;
}

function Home() {
  const current = useSession();
  if (!current) return <Navigate to="/sign-in" replace />;
  return <Navigate to={current.enrolmentOnly ? "/setup" : "/security"} replace />;
}

export function AppRoutes() {
  return (
    <Routes>
      <Route element={<Shell />}>
        <Route index element={<Home />} />
        <Route path="sign-in" element={<SignIn />} />
        <Route path="sign-up" element={<SignUp />} />
        <Route path="forgot-password" element={<ForgotPassword />} />
        <Route path="reset-password" element={<ResetPassword />} />
        <Route element={<RequireSession />}>
          <Route path="setup" element={<Setup />} />
          <Route path="security" element={<Security />} />
        </Route>
        <Route element={<RequireSession admin />}>
          <Route path="admin" element={<Admin />} />
          <Route path="admin/users/:userId" element={<AdminUser />} />
        </Route>
        <Route path="*" element={<Text>{t.notFound}</Text>} />
      </Route>
    </Routes>
  );
}

/** Waits for a cookie-mode session to resume (a reload) before routing. */
export function App() {
  const [ready, setReady] = useState(false);
  useEffect(() => {
    void resume().finally(() => setReady(true));
  }, []);
  if (!ready) return <Loader aria-label={t.common.loading} m="xl" />;
  return <AppRoutes />;
}
