/**
 * What the page's Content-Security-Policy asks of the libraries, set before any of them runs:
 * main.tsx imports this module first (imports run in order), ahead of every module that builds
 * a zod schema or renders a component.
 */
import { setNonce } from "get-nonce";
import { z } from "zod";
import { styleNonce } from "./theme";

// The CSP allows no `eval`: zod would probe for it (`new Function("")`) when the first schema
// is built, to compile its parsers, and the probe alone is a reported violation. Its
// interpreter is fast enough for these forms.
z.config({ jitless: true });

// The dialogs' scroll lock (react-remove-scroll, under Mantine's Modal and the phone menu)
// writes a <style> of its own; it takes its nonce from get-nonce, not from MantineProvider.
setNonce(styleNonce());
