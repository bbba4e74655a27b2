/**
 * Codes the service sends (audit event types, factor statuses, event outcomes) in the words of
 * strings.ts. A code with no wording (a newer service than this UI) is shown as it came: the
 * code is still more use to a reader than nothing.
 */
import { t } from "./strings";

function worded(words: Record<string, string>, code: string): string {
  return Object.hasOwn(words, code) ? words[code] : code;
}

export const eventName = (type: string): string => worded(t.eventTypes, type);
export const factorStatusName = (status: string): string => worded(t.factorStatus, status);
export const outcomeName = (outcome: string): string => worded(t.outcomes, outcome);

/** Every event type with a wording, as choices for a filter: in the order of their words. */
export function eventTypeChoices(): { value: string; label: string }[] {
  return Object.keys(t.eventTypes)
    .map((value) => ({ value, label: eventName(value) }))
    .sort((a, b) => a.label.localeCompare(b.label));
}
