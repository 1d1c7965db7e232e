"""User-facing errors: the CLI prints their message in one line and exits non-zero."""


class CnnlabError(Exception):
    """A problem the user can fix (bad path, corrupt file, bad flag value).

    The command line prints ``cnnlab: error: <message>`` with no traceback.
    """
