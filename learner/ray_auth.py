"""Ray's token file, made private before a local Ray starts.

A local `ray.init` (Ray 2.60) turns token authentication on by default and, when it finds
no token, writes a new one to ~/.ray/auth_token with the process umask: usually 0644, so
every user of the machine could read the token and use the cluster. `private_token_file`
runs first: it makes the file Ray will read itself, 0600, or tightens one this user owns.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path


def token_path() -> Path | None:
    """The token file a local Ray would read or write; None where no file is involved
    (authentication disabled, or the token given in RAY_AUTH_TOKEN)."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    explicit = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(explicit).expanduser() if explicit else Path.home() / ".ray" / "auth_token"


def private_token_file() -> Path | None:
    """Make sure the token file exists with mode 0600 (see the module's docstring)."""
    path = token_path()
    if path is None:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # written whole under another name, then linked: a second run starting at the
        # same moment sees either no file or the complete one
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth_token.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, 0o600)
        print(f"note: made Ray's token file {path} private (0600)", file=sys.stderr, flush=True)
    return path
