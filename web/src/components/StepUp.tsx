import { Modal, Stack, Text } from "@mantine/core";
import { useQueryClient } from "@tanstack/react-query";
import { createContext, useCallback, useContext, useRef, useState } from "react";
import { session } from "../api/client";
import { hasCode } from "../api/problem";
import { SignInFlow } from "../pages/SignInFlow";
import { t } from "../strings";

type Run = <T>(action: () => Promise<T>) => Promise<T>;

const StepUpContext = createContext<Run>((action) => action());

/** `withStepUp(action)`: runs the action; if the service asks for a recent sign-in
 * (403 `reauthentication_required`), asks the user to sign in again in a dialog (password and
 * second factor), takes the new session, and runs the action once more. */
export function useStepUp(): Run {
  return useContext(StepUpContext);
}

export function StepUpProvider({ email, children }: { email: string | null; children: React.ReactNode }) {
  const [open, setOpen] = useState(false);
  const pending = useRef<{ resolve: () => void; reject: (e: unknown) => void } | null>(null);
  const queryClient = useQueryClient();

  const run: Run = useCallback(async (action) => {
    try {
      return await action();
    } catch (error) {
      if (!hasCode(error, "reauthentication_required")) throw error;
      await new Promise<void>((resolve, reject) => {
        pending.current = { resolve, reject: () => reject(error) };
        setOpen(true);
      });
      return await action();
    }
  }, []);

  const close = () => {
    setOpen(false);
    pending.current?.reject(null);
    pending.current = null;
  };

  return (
    <StepUpContext.Provider value={run}>
      {children}
      <Modal opened={open} onClose={close} title={t.stepUp.title} centered>
        <Stack>
          <Text>{t.stepUp.intro}</Text>
          {open && email && (
            <SignInFlow
              fixedEmail={email}
              withPasskey={false}
              onAuthenticated={(tokens) => {
                session.start(tokens);
                void queryClient.invalidateQueries();
                setOpen(false);
                pending.current?.resolve();
                pending.current = null;
              }}
            />
          )}
        </Stack>
      </Modal>
    </StepUpContext.Provider>
  );
}
