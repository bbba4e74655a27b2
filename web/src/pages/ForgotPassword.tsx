import { zodResolver } from "@hookform/resolvers/zod";
import { Anchor, Button, Card, PasswordInput, Stack, Text, TextInput } from "@mantine/core";
import { useState } from "react";
import { useForm } from "react-hook-form";
import { Link, useNavigate, useSearchParams } from "react-router";
import { z } from "zod";
import { api, unwrap } from "../api/client";
import { hasCode } from "../api/problem";
import { FocusHeading } from "../components/FocusHeading";
import { PasswordStrength } from "../components/PasswordStrength";
import { Notice, ProblemAlert } from "../components/ProblemAlert";
import { t } from "../strings";

const emailSchema = z.object({ email: z.string().trim().min(1, t.errors.required).email(t.errors.email) });

export function ForgotPassword() {
  const form = useForm<z.infer<typeof emailSchema>>({ resolver: zodResolver(emailSchema), defaultValues: { email: "" } });
  const [error, setError] = useState<unknown>(null);
  const [sent, setSent] = useState(false);
  const submit = form.handleSubmit(async ({ email }) => {
    setError(null);
    try {
      await unwrap(api.POST("/api/v1/auth/password-reset", { body: { email } }));
      setSent(true);
    } catch (e) {
      setError(e);
    }
  });
  return (
    <Card withBorder padding="lg" maw={440} mx="auto">
      <form onSubmit={submit} noValidate>
        <Stack>
          <FocusHeading>{t.forgot.title}</FocusHeading>
          <ProblemAlert error={error} />
          {sent ? (
            <Notice>{t.forgot.sent}</Notice>
          ) : (
            <>
              <Text>{t.forgot.intro}</Text>
              <TextInput label={t.common.email} type="email" autoComplete="email" error={form.formState.errors.email?.message} {...form.register("email")} />
              <Button type="submit" loading={form.formState.isSubmitting}>
                {t.forgot.submit}
              </Button>
            </>
          )}
          <Anchor component={Link} to="/sign-in">
            {t.nav.signIn}
          </Anchor>
        </Stack>
      </form>
    </Card>
  );
}

const resetSchema = z
  .object({ password: z.string().min(1, t.errors.required), confirm: z.string() })
  .refine((v) => v.password === v.confirm, { path: ["confirm"], message: t.errors.passwordsDiffer });

/** The page a reset email links to: `/reset-password?token=…`. */
export function ResetPassword() {
  const [params] = useSearchParams();
  const token = params.get("token");
  const navigate = useNavigate();
  const form = useForm<z.infer<typeof resetSchema>>({ resolver: zodResolver(resetSchema), defaultValues: { password: "", confirm: "" } });
  const [error, setError] = useState<unknown>(null);
  const password = form.watch("password");
  const submit = form.handleSubmit(async ({ password }) => {
    setError(null);
    try {
      await unwrap(api.POST("/api/v1/auth/password-reset/confirm", { body: { token: token ?? "", new_password: password } }));
      navigate("/sign-in", { replace: true, state: { notice: "reset" } });
    } catch (e) {
      if (hasCode(e, "weak_password", "breached_password")) form.setError("password", { message: e.detail }, { shouldFocus: true });
      else setError(e);
    }
  });
  return (
    <Card withBorder padding="lg" maw={440} mx="auto">
      <form onSubmit={submit} noValidate>
        <Stack>
          <FocusHeading>{t.forgot.resetTitle}</FocusHeading>
          <ProblemAlert error={error} />
          {!token ? (
            <Text>{t.forgot.noToken}</Text>
          ) : (
            <>
              <PasswordInput label={t.security.newPassword} autoComplete="new-password" error={form.formState.errors.password?.message} {...form.register("password")} />
              <PasswordStrength password={password} userInputs={["cloudmfa"]} />
              <PasswordInput label={t.forgot.confirm} autoComplete="new-password" error={form.formState.errors.confirm?.message} {...form.register("confirm")} />
              <Button type="submit" loading={form.formState.isSubmitting}>
                {t.forgot.resetSubmit}
              </Button>
            </>
          )}
        </Stack>
      </form>
    </Card>
  );
}
