import { zodResolver } from "@hookform/resolvers/zod";
import { Anchor, Button, Checkbox, Group, PasswordInput, Stack, Text, TextInput } from "@mantine/core";
import {
  type PublicKeyCredentialRequestOptionsJSON,
  browserSupportsWebAuthnAutofill,
  startAuthentication,
  WebAuthnAbortService,
} from "@simplewebauthn/browser";
import { useEffect, useState } from "react";
import { useForm } from "react-hook-form";
import { z } from "zod";
import { api, type Schemas, session, type TokenResponse, unwrap } from "../api/client";
import { ApiError, hasCode } from "../api/problem";
import { FocusHeading } from "../components/FocusHeading";
import { ProblemAlert } from "../components/ProblemAlert";
import { t } from "../strings";

type MfaRequired = Schemas["MfaRequiredResponse"];
type LoginFactor = Schemas["LoginFactor"];
type CodeSent = Schemas["CodeSent"];

/** Seconds between two codes sent to one factor (the service's default cooldown); a 429 with
 * Retry-After overrides it. */
export const RESEND_COOLDOWN_S = 30;

type Step =
  | { kind: "password" }
  | { kind: "choose"; mfa: MfaRequired }
  | { kind: "code"; mfa: MfaRequired; factor: LoginFactor; sent: CodeSent | null }
  | { kind: "webauthn"; mfa: MfaRequired; factor: LoginFactor };

export function factorName(f: { type: string; label?: string | null }): string {
  const kind = t.factorTypes[f.type] ?? f.type;
  return f.label && f.label !== kind && f.type !== "recovery" ? `${kind} (${f.label})` : kind;
}

function passkeyError(error: unknown): unknown {
  if (error instanceof ApiError) return error;
  if (error instanceof Error && (error.name === "NotAllowedError" || error.name === "AbortError")) {
    return new ApiError(0, "passkey_cancelled", t.errors.passkeyCancelled);
  }
  return new ApiError(0, "passkey_failed", error instanceof Error ? error.message : t.errors.generic);
}

/**
 * The sign-in ceremony: password (or a passkey), then the choice of second factor and its code,
 * prompt or recovery code. Used by the sign-in page and, with `fixedEmail`, for step-up.
 */
export function SignInFlow({
  fixedEmail,
  withPasskey = true,
  onAuthenticated,
}: {
  fixedEmail?: string;
  withPasskey?: boolean;
  onAuthenticated: (tokens: TokenResponse) => void;
}) {
  const [step, setStep] = useState<Step>({ kind: "password" });
  const [error, setError] = useState<unknown>(null);

  const restart = (e: unknown = null) => {
    setError(e);
    setStep({ kind: "password" });
  };

  const choose = async (mfa: MfaRequired, factor: LoginFactor) => {
    setError(null);
    try {
      const result = await api.POST("/api/v1/auth/challenge", {
        body: { mfa_token: mfa.mfa_token, factor_id: factor.id },
      });
      const data = await unwrap(Promise.resolve(result));
      if (factor.type === "webauthn") {
        setStep({ kind: "webauthn", mfa, factor });
        const optionsJSON = (data as Schemas["ChallengeOptions"]).public_key as unknown as PublicKeyCredentialRequestOptionsJSON;
        try {
          const credential = await startAuthentication({ optionsJSON });
          const tokens = await unwrap(
            api.POST("/api/v1/auth/verify", {
              body: { mfa_token: mfa.mfa_token, factor_id: factor.id, credential: credential as unknown as Record<string, unknown> },
            }),
          );
          onAuthenticated(tokens);
        } catch (e) {
          setError(passkeyError(e));
        }
        return;
      }
      const sent = result.response.status === 202 ? (data as CodeSent) : null;
      setStep({ kind: "code", mfa, factor, sent });
    } catch (e) {
      if (hasCode(e, "mfa_token_expired", "account_locked")) restart(e);
      else setError(e);
    }
  };

  const afterPassword = (answer: TokenResponse | MfaRequired) => {
    if (answer.status !== "mfa_required") {
      onAuthenticated(answer as TokenResponse);
      return;
    }
    const mfa = answer as MfaRequired;
    if (mfa.factors.length === 1) void choose(mfa, mfa.factors[0]);
    else setStep({ kind: "choose", mfa });
  };

  return (
    <Stack>
      <ProblemAlert error={error} />
      {step.kind === "password" && (
        <PasswordStep
          fixedEmail={fixedEmail}
          withPasskey={withPasskey}
          onAnswer={afterPassword}
          onError={setError}
          onPasskey={onAuthenticated}
        />
      )}
      {step.kind === "choose" && (
        <Stack>
          <FocusHeading order={3}>{t.signIn.chooseTitle}</FocusHeading>
          {step.mfa.factors.map((f) => (
            <Button key={f.id} variant="default" onClick={() => void choose(step.mfa, f)}>
              {factorName(f)}
            </Button>
          ))}
          <Anchor component="button" type="button" onClick={() => restart()}>
            {t.signIn.startOver}
          </Anchor>
        </Stack>
      )}
      {step.kind === "code" && (
        <CodeStep
          key={step.factor.id}
          step={step}
          allowRemember={!fixedEmail}
          onAuthenticated={onAuthenticated}
          onError={(e) => (hasCode(e, "mfa_token_expired", "account_locked") ? restart(e) : setError(e))}
          onResent={(sent) => setStep({ ...step, sent })}
          onOther={step.mfa.factors.length > 1 ? () => { setError(null); setStep({ kind: "choose", mfa: step.mfa }); } : undefined}
        />
      )}
      {step.kind === "webauthn" && (
        <Stack>
          <FocusHeading order={3}>{factorName(step.factor)}</FocusHeading>
          <Text>{t.signIn.passkeyPrompt}</Text>
          <Group>
            <Button onClick={() => void choose(step.mfa, step.factor)}>{t.signIn.verify}</Button>
            {step.mfa.factors.length > 1 && (
              <Button variant="subtle" onClick={() => setStep({ kind: "choose", mfa: step.mfa })}>
                {t.signIn.otherMethod}
              </Button>
            )}
          </Group>
        </Stack>
      )}
    </Stack>
  );
}

const passwordSchema = z.object({
  email: z.string().trim().min(1, t.errors.required).email(t.errors.email),
  password: z.string().min(1, t.errors.required),
});

function PasswordStep({
  fixedEmail,
  withPasskey,
  onAnswer,
  onError,
  onPasskey,
}: {
  fixedEmail?: string;
  withPasskey: boolean;
  onAnswer: (answer: TokenResponse | MfaRequired) => void;
  onError: (e: unknown) => void;
  onPasskey: (tokens: TokenResponse) => void;
}) {
  const form = useForm<z.infer<typeof passwordSchema>>({
    resolver: zodResolver(passwordSchema),
    defaultValues: { email: fixedEmail ?? "", password: "" },
  });
  const [busy, setBusy] = useState(false);

  const passkey = async (autofill: boolean) => {
    const options = await unwrap(api.POST("/api/v1/auth/passkey/options", {}));
    const credential = await startAuthentication({
      optionsJSON: options.public_key as unknown as PublicKeyCredentialRequestOptionsJSON,
      useBrowserAutofill: autofill,
    });
    setBusy(true);
    try {
      const tokens = await unwrap(
        api.POST("/api/v1/auth/passkey/verify", {
          body: { challenge_id: options.challenge_id, credential: credential as unknown as Record<string, unknown> },
        }),
      );
      onPasskey(tokens);
    } finally {
      setBusy(false);
    }
  };

  // Conditional UI: the browser offers this site's passkeys in the email field's autofill.
  // Quietly skipped where the browser or the service does not offer it.
  useEffect(() => {
    if (!withPasskey || fixedEmail) return;
    let live = true;
    void browserSupportsWebAuthnAutofill()
      .then((supported) => (supported && live ? passkey(true) : undefined))
      .catch((e: unknown) => {
        if (live && e instanceof ApiError && e.code !== "not_found" && e.status !== 405) onError(e);
      });
    return () => {
      live = false;
      WebAuthnAbortService.cancelCeremony();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const submit = form.handleSubmit(async (values) => {
    onError(null);
    setBusy(true);
    try {
      const device = fixedEmail ? null : session.deviceToken();
      const answer = await unwrap(
        api.POST("/api/v1/auth/login", {
          body: { email: values.email, password: values.password, ...(device ? { device_token: device } : {}) },
        }),
      );
      onAnswer(answer);
    } catch (e) {
      onError(e); // the alert takes the focus
    } finally {
      setBusy(false);
    }
  });

  return (
    <form onSubmit={submit} noValidate>
      <Stack>
        <TextInput
          label={t.common.email}
          type="email"
          autoComplete={withPasskey ? "username webauthn" : "username"}
          readOnly={Boolean(fixedEmail)}
          error={form.formState.errors.email?.message}
          {...form.register("email")}
        />
        <PasswordInput
          label={t.common.password}
          autoComplete="current-password"
          error={form.formState.errors.password?.message}
          {...form.register("password")}
        />
        <Button type="submit" loading={busy}>
          {t.signIn.submit}
        </Button>
        {withPasskey && !fixedEmail && (
          <Button
            variant="default"
            onClick={() => {
              onError(null);
              WebAuthnAbortService.cancelCeremony();
              passkey(false).catch((e: unknown) => onError(passkeyError(e)));
            }}
          >
            {t.signIn.passkey}
          </Button>
        )}
      </Stack>
    </form>
  );
}

const codeSchema = z.object({ code: z.string().trim().min(1, t.errors.codeFormat).max(128), remember: z.boolean() });

/** Seconds left of a wait of `wait.seconds` that started when `wait` last changed. */
function useCountdown(wait: { seconds: number } | null): number {
  const [left, setLeft] = useState(wait?.seconds ?? 0);
  useEffect(() => {
    if (wait === null) return;
    setLeft(wait.seconds);
    const started = Date.now();
    const timer = setInterval(() => {
      const remaining = Math.max(0, wait.seconds - Math.floor((Date.now() - started) / 1000));
      setLeft(remaining);
      if (remaining === 0) clearInterval(timer);
    }, 250);
    return () => clearInterval(timer);
  }, [wait]);
  return left;
}

function CodeStep({
  step,
  allowRemember,
  onAuthenticated,
  onError,
  onResent,
  onOther,
}: {
  step: Extract<Step, { kind: "code" }>;
  allowRemember: boolean;
  onAuthenticated: (tokens: TokenResponse) => void;
  onError: (e: unknown) => void;
  onResent: (sent: CodeSent) => void;
  onOther?: () => void;
}) {
  const { mfa, factor, sent } = step;
  const form = useForm<z.infer<typeof codeSchema>>({
    resolver: zodResolver(codeSchema),
    defaultValues: { code: "", remember: false },
  });
  const [cooldown, setCooldown] = useState<{ seconds: number } | null>(sent ? { seconds: RESEND_COOLDOWN_S } : null);
  const left = useCountdown(cooldown);
  const [busy, setBusy] = useState(false);
  const numeric = factor.type !== "recovery";

  const submit = form.handleSubmit(async (values) => {
    onError(null);
    setBusy(true);
    try {
      const tokens = await unwrap(
        api.POST("/api/v1/auth/verify", {
          body: {
            mfa_token: mfa.mfa_token,
            factor_id: factor.id,
            code: values.code.trim(),
            ...(values.remember ? { remember_device: true } : {}),
          },
        }),
      );
      onAuthenticated(tokens);
    } catch (e) {
      onError(e); // the alert takes the focus
      form.setValue("code", "");
    } finally {
      setBusy(false);
    }
  });

  const resend = async () => {
    onError(null);
    try {
      const again = await unwrap(
        api.POST("/api/v1/auth/challenge", { body: { mfa_token: mfa.mfa_token, factor_id: factor.id } }),
      );
      onResent(again as CodeSent);
      setCooldown({ seconds: RESEND_COOLDOWN_S });
    } catch (e) {
      if (e instanceof ApiError && e.retryAfter) setCooldown({ seconds: e.retryAfter });
      onError(e);
    }
  };

  return (
    <form onSubmit={submit} noValidate>
      <Stack>
        <FocusHeading order={3}>{t.signIn.codeTitle}</FocusHeading>
        <Text>{sent ? t.signIn.sentTo(sent.destination_hint) : t.signIn.codeHelp[factor.type]}</Text>
        <TextInput
          label={`${t.signIn.code} — ${factorName(factor)}`}
          autoComplete="one-time-code"
          inputMode={numeric ? "numeric" : "text"}
          autoCapitalize="characters"
          spellCheck={false}
          error={form.formState.errors.code?.message}
          data-autofocus
          {...form.register("code")}
        />
        {allowRemember && <Checkbox label={t.signIn.rememberDevice} {...form.register("remember")} />}
        <Button type="submit" loading={busy}>
          {t.signIn.verify}
        </Button>
        <Group>
          {sent && (
            <Button variant="subtle" disabled={left > 0} onClick={() => void resend()}>
              {left > 0 ? t.signIn.resendIn(left) : t.signIn.resend}
            </Button>
          )}
          {onOther && (
            <Button variant="subtle" onClick={onOther}>
              {t.signIn.otherMethod}
            </Button>
          )}
        </Group>
      </Stack>
    </form>
  );
}
