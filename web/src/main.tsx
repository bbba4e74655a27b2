import "./csp"; // first: configures libraries before any of them runs
import "@mantine/core/styles.css";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter } from "react-router";
import { App } from "./App";
import { newQueryClient, Providers } from "./theme";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Providers client={newQueryClient()}>
      <BrowserRouter>
        <App />
      </BrowserRouter>
    </Providers>
  </StrictMode>,
);
