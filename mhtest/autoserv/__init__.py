"""autoserv."""
