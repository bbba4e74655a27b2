import { useQuery } from "@tanstack/react-query";
import { useSyncExternalStore } from "react";
import { api, session, unwrap } from "./api/client";

/** The current session (null when signed out), re-rendering on change. */
export function useSession() {
  return useSyncExternalStore(session.subscribe, session.get);
}

export function useMe() {
  const current = useSession();
  return useQuery({
    queryKey: ["me", current?.sessionId],
    queryFn: () => unwrap(api.GET("/api/v1/me")),
    enabled: current !== null,
  });
}
