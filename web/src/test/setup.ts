import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterEach, vi } from "vitest";

// jsdom lacks what Mantine asks of the browser.
Object.defineProperty(window, "matchMedia", {
  writable: true,
  value: (query: string) => ({
    matches: false, media: query, onchange: null,
    addListener: vi.fn(), removeListener: vi.fn(), addEventListener: vi.fn(), removeEventListener: vi.fn(), dispatchEvent: vi.fn(),
  }),
});
class ResizeObserver { observe() {} unobserve() {} disconnect() {} }
window.ResizeObserver = ResizeObserver;
window.HTMLElement.prototype.scrollIntoView = () => {};

afterEach(() => cleanup());

// Every call of the API client goes to the table of src/test/mockApi.ts (the client takes
// `fetch` when it is created, so this comes first).
import { fakeFetch } from "./mockApi";
import { resetForTests } from "../api/client";
globalThis.fetch = fakeFetch as typeof fetch;
afterEach(() => {
  resetForTests();
  document.cookie = "cloudmfa_csrf=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/";
});
