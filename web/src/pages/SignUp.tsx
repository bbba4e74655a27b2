import { zodResolver } from "@hookform/resolvers/zod";
import { Anchor, Button, Card, PasswordInput, Stack, Text, TextInput } from "@mantine/core";
import { useState } from "react";
import { useForm } from "react-hook-form";
import { Link } from "react-router";
import { z } from "zod";
import { api, unwrap } from "../api/client";
import { hasCode } from "../api/problem";
import { FocusHeading } from "../components/FocusHeading";
import { PasswordStrength } from "../components/PasswordStrength";
import { ProblemAlert } from "../components/ProblemAlert";
import { t } from "../strings";
import { useAfterSignIn } from "./SignIn";

const schema = z.object({
  email: z.string().trim().min(1, t.errors.required).email(t.errors.email),
  display_name: z.string().trim().max(200),
  password: z.string().min(1, t.errors.required),
});
type Values = z.infer<typeof schema>;

export function SignUp() {
  const after = useAfterSignIn();
  const form = useForm<Values>({ resolver: zodResolver(schema), defaultValues: { email: "", display_name: "", password: "" } });
  const [error, setError] = useState<unknown>(null);
  const password = form.watch("password");
  const email = form.watch("email");

  const submit = form.handleSubmit(async (values) => {
    setError(null);
    try {
      await unwrap(
        api.POST("/api/v1/accounts", {
          body: { email: values.email, password: values.password, ...(values.display_name ? { display_name: values.display_name } : {}) },
        }),
      );
      // Straight on to the first sign-in (and, under a required MFA policy, the set-up wizard).
      const answer = await unwrap(api.POST("/api/v1/auth/login", { body: { email: values.email, password: values.password } }));
      if (answer.status === "authenticated" && "access_token" in answer) after(answer);
    } catch (e) {
      // Policy and duplicate-address refusals belong to their field; anything else above the form.
      if (hasCode(e, "weak_password", "breached_password")) form.setError("password", { message: e.detail }, { shouldFocus: true });
      else if (hasCode(e, "email_taken")) form.setError("email", { message: e.detail }, { shouldFocus: true });
      else setError(e);
    }
  });

  return (
    <Card withBorder padding="lg" maw={440} mx="auto">
      <form onSubmit={submit} noValidate>
        <Stack>
          <FocusHeading>{t.signUp.title}</FocusHeading>
          <ProblemAlert error={error} />
          <TextInput label={t.common.email} type="email" autoComplete="email" error={form.formState.errors.email?.message} {...form.register("email")} />
          <TextInput label={t.signUp.displayName} autoComplete="name" error={form.formState.errors.display_name?.message} {...form.register("display_name")} />
          <PasswordInput
            label={t.common.password}
            description={t.signUp.passwordHint}
            autoComplete="new-password"
            error={form.formState.errors.password?.message}
            {...form.register("password")}
          />
          <PasswordStrength password={password} userInputs={[email, "cloudmfa"]} />
          <Button type="submit" loading={form.formState.isSubmitting}>
            {t.signUp.submit}
          </Button>
          <Text size="sm">
            {t.signUp.haveAccount}{" "}
            <Anchor component={Link} to="/sign-in">
              {t.nav.signIn}
            </Anchor>
          </Text>
        </Stack>
      </form>
    </Card>
  );
}
