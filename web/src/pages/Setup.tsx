import { Button, Card, Code, CopyButton, Group, Image, Stack, Text, TextInput } from "@mantine/core";
import { type PublicKeyCredentialCreationOptionsJSON, startRegistration } from "@simplewebauthn/browser";
import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useNavigate } from "react-router";
import { api, type Schemas, signOut, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import { FocusHeading } from "../components/FocusHeading";
import { Notice, ProblemAlert } from "../components/ProblemAlert";
import { RecoveryCodes } from "../components/RecoveryCodes";
import { useStepUp } from "../components/StepUp";
import { useSession } from "../session";
import { t } from "../strings";

type Enrolment = Schemas["EnrolResponse"];
const TYPES = ["totp", "webauthn", "sms", "email"] as const;
type FactorType = (typeof TYPES)[number];

type Step =
  | { kind: "choose" }
  | { kind: "details"; type: FactorType }
  | { kind: "verify"; enrolment: Enrolment }
  | { kind: "codes"; codes: string[] };

/** The set-up wizard: pick a kind of factor, enrol it, prove it works, and (for the first
 * factor) keep the recovery codes. */
export function Setup() {
  const current = useSession();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const withStepUp = useStepUp();
  const [step, setStep] = useState<Step>({ kind: "choose" });
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [label, setLabel] = useState("");
  const [destination, setDestination] = useState("");
  const [code, setCode] = useState("");
  const enrolmentOnly = current?.enrolmentOnly ?? false;

  const run = async (work: () => Promise<void>) => {
    setError(null);
    setBusy(true);
    try {
      await work();
    } catch (e) {
      setError(e instanceof ApiError ? e : new ApiError(0, "passkey_failed", e instanceof Error && e.name === "NotAllowedError" ? t.errors.passkeyCancelled : t.errors.generic));
    } finally {
      setBusy(false);
    }
  };

  const activated = (answer: Schemas["ActivateResponse"]) => {
    void queryClient.invalidateQueries();
    if (answer.recovery_codes?.length) setStep({ kind: "codes", codes: answer.recovery_codes });
    else finish();
  };

  const finish = () => {
    if (enrolmentOnly) {
      // The session that set up the first factor stays confined until the user signs in
      // with it (the service's rule): sign in again. The reason travels with the session's
      // end too: if the sign-out lands before this navigation renders, the guard of /setup
      // sends the page to sign-in first, without this navigation's state.
      navigate("/sign-in", { replace: true, state: { notice: "enrolled" } });
      void signOut("enrolled");
    } else navigate("/security", { replace: true });
  };

  const enrol = (type: FactorType) =>
    run(async () => {
      const body: Schemas["EnrolRequest"] = { type, ...(label.trim() ? { label: label.trim() } : {}) };
      if (type === "sms") body.phone = destination.trim();
      if (type === "email") body.email = destination.trim();
      const enrolment = await withStepUp(() => unwrap(api.POST("/api/v1/me/factors", { body })));
      if (type === "webauthn") {
        const credential = await startRegistration({ optionsJSON: enrolment.public_key as unknown as PublicKeyCredentialCreationOptionsJSON });
        const answer = await unwrap(
          api.POST("/api/v1/me/factors/{factor_id}/activate", {
            params: { path: { factor_id: enrolment.id } },
            body: { credential: credential as unknown as Record<string, unknown> },
          }),
        );
        activated(answer);
        return;
      }
      setCode("");
      setStep({ kind: "verify", enrolment });
    });

  const activate = (enrolment: Enrolment) =>
    run(async () => {
      const answer = await unwrap(
        api.POST("/api/v1/me/factors/{factor_id}/activate", {
          params: { path: { factor_id: enrolment.id } },
          body: { code: code.trim() },
        }),
      );
      activated(answer);
    });

  return (
    <Card withBorder padding="lg" maw={560} mx="auto">
      <Stack>
        <FocusHeading>{t.setup.title}</FocusHeading>
        {enrolmentOnly && step.kind === "choose" && <Notice>{t.setup.requiredNotice}</Notice>}
        <ProblemAlert error={error} />
        {step.kind === "choose" && (
          <Stack>
            <Text>{t.setup.choose}</Text>
            {TYPES.map((type) => (
              <Button key={type} variant="default" onClick={() => { setError(null); setDestination(""); setStep({ kind: "details", type }); }}>
                {t.factorTypes[type]}
              </Button>
            ))}
          </Stack>
        )}
        {step.kind === "details" && (
          <form onSubmit={(e) => { e.preventDefault(); void enrol(step.type); }} noValidate>
            <Stack>
              <FocusHeading order={3}>{t.factorTypes[step.type]}</FocusHeading>
              {step.type === "webauthn" && <Text>{t.setup.passkeyIntro}</Text>}
              {step.type === "sms" && (
                <TextInput label={t.setup.phone} type="tel" autoComplete="tel" required value={destination} onChange={(e) => setDestination(e.currentTarget.value)} />
              )}
              {step.type === "email" && (
                <TextInput label={t.setup.emailAddress} type="email" autoComplete="email" required value={destination} onChange={(e) => setDestination(e.currentTarget.value)} />
              )}
              <TextInput label={t.setup.label} value={label} onChange={(e) => setLabel(e.currentTarget.value)} maxLength={100} />
              <Group>
                <Button variant="default" onClick={() => setStep({ kind: "choose" })}>
                  {t.common.back}
                </Button>
                <Button type="submit" loading={busy}>
                  {step.type === "webauthn" ? t.setup.passkeyCreate : step.type === "totp" ? t.common.continue : t.setup.sendCode}
                </Button>
              </Group>
            </Stack>
          </form>
        )}
        {step.kind === "verify" && (
          <form onSubmit={(e) => { e.preventDefault(); void activate(step.enrolment); }} noValidate>
            <Stack>
              {step.enrolment.type === "totp" ? (
                <>
                  <FocusHeading order={3}>{t.setup.totpScan}</FocusHeading>
                  {step.enrolment.qr_svg && (
                    // Shown as an image, never inserted as markup: an SVG in <img> runs no script.
                    <Image src={`data:image/svg+xml;charset=utf-8,${encodeURIComponent(step.enrolment.qr_svg)}`} alt={t.setup.totpQrAlt} w={200} h={200} bg="white" />
                  )}
                  <Text>{t.setup.totpManual}</Text>
                  <Group gap="xs">
                    <Code fz="md" data-testid="totp-secret">{step.enrolment.secret}</Code>
                    <CopyButton value={step.enrolment.secret ?? ""}>
                      {({ copied, copy }) => (
                        <Button size="xs" variant="default" onClick={copy}>
                          {copied ? t.common.copied : t.common.copy}
                        </Button>
                      )}
                    </CopyButton>
                  </Group>
                  <Text>{t.setup.totpVerify}</Text>
                </>
              ) : (
                <FocusHeading order={3}>{t.setup.codeSent(step.enrolment.destination_hint ?? "")}</FocusHeading>
              )}
              <TextInput label={t.signIn.code} autoComplete="one-time-code" inputMode="numeric" required value={code} onChange={(e) => setCode(e.currentTarget.value)} />
              <Button type="submit" loading={busy}>
                {t.setup.activate}
              </Button>
            </Stack>
          </form>
        )}
        {step.kind === "codes" && <RecoveryCodes codes={step.codes} onDone={finish} />}
      </Stack>
    </Card>
  );
}

