import { render } from "@testing-library/react";
import { MemoryRouter, useLocation } from "react-router";
import { AppRoutes } from "../App";
import { newQueryClient, Providers } from "../theme";

export const location = { current: "" };

function Where() {
  const here = useLocation();
  location.current = here.pathname + here.search;
  return null;
}

/** The whole app's routes, in memory, starting at `path`. */
export function renderAt(path: string) {
  return render(
    <Providers client={newQueryClient()}>
      <MemoryRouter initialEntries={[path]}>
        <AppRoutes />
        <Where />
      </MemoryRouter>
    </Providers>,
  );
}
