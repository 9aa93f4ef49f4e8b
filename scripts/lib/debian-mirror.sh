# shellcheck shell=bash
# Finds the Debian archive this machine's apt already uses, so that nothing in
# the repository names a package host: deb-src lines and debootstrap both take
# the URI and keyring from the machine's own configuration.
#
#   source scripts/lib/debian-mirror.sh
#   parley_debian_mirror     # prints "URI SIGNED_BY" of the main archive for this release
#
# Reads one-line sources (/etc/apt/sources.list, *.list) and deb822 sources
# (*.sources). The first entry of type deb that carries the release's own
# suite (bookworm, not bookworm-security) and component main wins.

parley_debian_codename() {
  local codename=""
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
  fi
  printf '%s\n' "${codename:-bookworm}"
}

parley_debian_mirror() {
  local codename
  codename="$(parley_debian_codename)"
  python3 - "$codename" <<'PY'
import glob, os, re, sys
codename = sys.argv[1]
default_key = "/usr/share/keyrings/debian-archive-keyring.gpg"

def one_line(path):
    for raw in open(path, encoding="utf-8", errors="replace"):
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        opts = {}
        m = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
        rest = line[4:]
        if m:
            for kv in m.group(1).split():
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    opts[k] = v
            rest = m.group(2)
        parts = rest.split()
        if len(parts) >= 3:
            yield parts[0], [parts[1]], parts[2:], opts.get("signed-by")

def deb822(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split(), fields.get("signed-by")

paths = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
entries = []
for p in paths:
    if os.path.isfile(p):
        entries += list(one_line(p))
for p in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    entries += list(deb822(p))
for uri, suites, comps, key in entries:
    if codename in suites and "main" in comps:
        key = key if key and key.startswith("/") and os.path.exists(key) else default_key
        print(uri.rstrip("/"), key)
        sys.exit(0)
sys.stderr.write("no apt source of type deb for %s main in /etc/apt\n" % codename)
sys.exit(1)
PY
}
