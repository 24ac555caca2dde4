"""Where tests execute: the child program, the fork server, local/remote runners."""
