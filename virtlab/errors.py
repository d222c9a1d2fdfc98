"""The ways a run or a request can fail, in one place so that every layer (the
machine, the back ends, the harness, the CLI) can raise and catch them without
importing each other."""


class GuestStop(Exception):
    """Raised inside an exit handler to end the run: the guest failed (or
    attacked its VMM), and the message is the run's reason.  lguest's
    kill_guest: the guest dies, the host and the other runs go on."""


class UsageError(ValueError):
    """A bad name, option or file from the user: one line, exit status 2."""
