"""chDB request loop for tally-testkit (see testkit/src/chdb.rs).

Holds one chdb Session and answers JSON lines on stdin:
  {"sql": "...", "format": "TabSeparated"}  ->  {"ok": true, "output": "..."}
                                           or {"ok": false, "error": "..."}
The first line written is a handshake: {"ready": true, "version": "..."} or
{"ready": false, "error": "..."} when chdb cannot be imported.
"""
import json
import os
import sys

# The protocol owns the original stdout; anything else that prints (Python
# code or the C++ engine writing to fd 1) goes to stderr instead.
_proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr


def send(obj):
    _proto.write(json.dumps(obj) + "\n")
    _proto.flush()


def main():
    session_dir = sys.argv[1]
    try:
        from chdb import session as chdb_session
    except Exception as e:  # noqa: BLE001 - report any import failure
        send({"ready": False, "error": "import chdb failed: %s: %s" % (type(e).__name__, e)})
        return 3
    sess = chdb_session.Session(session_dir)
    try:
        version = sess.query("SELECT version()", "TabSeparated").bytes().decode().strip()
        send({"ready": True, "version": version})
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                res = sess.query(req["sql"], req.get("format") or "TabSeparated")
                data = res.bytes() if res is not None else b""
                try:
                    send({"ok": True, "output": data.decode("utf-8")})
                except UnicodeDecodeError:
                    send({"ok": False, "error": "query output is not UTF-8 text; ask for a text format"})
            except Exception as e:  # noqa: BLE001 - every failure goes back to Rust
                send({"ok": False, "error": str(e)})
    finally:
        sess.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
