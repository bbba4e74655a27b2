"""Messages to users (codes by SMS and email): what a message is and who delivers it."""
