import { Anchor, Card, Group, Stack, Text } from "@mantine/core";
import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useLocation, useNavigate } from "react-router";
import { session, type TokenResponse } from "../api/client";
import { FocusHeading } from "../components/FocusHeading";
import { Notice } from "../components/ProblemAlert";
import { t } from "../strings";
import { SignInFlow } from "./SignInFlow";

export type SignInState = { notice?: keyof typeof t.ended } | null;

/** Where a new session goes: the set-up wizard while it may only enrol a factor. */
export function useAfterSignIn() {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  return (tokens: TokenResponse) => {
    queryClient.clear();
    session.start(tokens);
    navigate(tokens.mfa_enrollment_required ? "/setup" : "/security", { replace: true });
  };
}

export function SignIn() {
  const location = useLocation();
  const after = useAfterSignIn();
  // Why the user is here: a message passed by the page that sent them, or why their session
  // ended. A page that signs out may arrive here twice (the route guard's redirect when the
  // session ends, then its own navigation with a message): the later message wins.
  const passed = (location.state as SignInState)?.notice;
  const [ended] = useState(() => session.takeEndReason());
  const reason = passed ?? ended;
  const notice = reason ? t.ended[reason] : null;
  return (
    <Card withBorder padding="lg" maw={440} mx="auto">
      <Stack>
        <FocusHeading>{t.signIn.title}</FocusHeading>
        {notice && <Notice>{notice}</Notice>}
        <SignInFlow onAuthenticated={after} />
        <Group justify="space-between">
          <Anchor component={Link} to="/forgot-password">
            {t.signIn.forgot}
          </Anchor>
          <Text size="sm">
            {t.signIn.noAccount}{" "}
            <Anchor component={Link} to="/sign-up">
              {t.nav.signUp}
            </Anchor>
          </Text>
        </Group>
      </Stack>
    </Card>
  );
}
