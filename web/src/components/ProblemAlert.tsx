import { Alert } from "@mantine/core";
import { useEffect, useRef } from "react";
import { errorText } from "../api/problem";

/** A call's problem `detail`, in words; takes the focus so keyboard and screen-reader users
 * land on it. */
export function ProblemAlert({ error }: { error: unknown }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (error) ref.current?.focus();
  }, [error]);
  if (!error) return null;
  return (
    <Alert ref={ref} color="red" role="alert" tabIndex={-1} variant="light">
      {errorText(error)}
    </Alert>
  );
}

export function Notice({ children }: { children: React.ReactNode }) {
  return (
    <Alert color="blue" role="status" variant="light">
      {children}
    </Alert>
  );
}
