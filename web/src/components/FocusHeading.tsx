import { Title, type TitleOrder } from "@mantine/core";
import { useEffect, useRef } from "react";

/** A step's heading that takes the focus when the step appears, so assistive technology
 * announces the new step and the keyboard starts from it. */
export function FocusHeading({ children, order = 2 }: { children: React.ReactNode; order?: TitleOrder }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    ref.current?.focus();
  }, []);
  return (
    <Title order={order} ref={ref} tabIndex={-1} style={{ outline: "none" }}>
      {children}
    </Title>
  );
}
