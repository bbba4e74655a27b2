import { t } from "../strings";

/** A timestamp in the reader's locale and time zone; `never` for none. */
export function When({ at }: { at: string | null | undefined }) {
  if (!at) return <>{t.common.never}</>;
  const date = new Date(at);
  return <time dateTime={at}>{date.toLocaleString()}</time>;
}
