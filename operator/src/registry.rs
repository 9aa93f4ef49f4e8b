//! Container image references and the registry allow-list
//! (`PARLEY_ALLOWED_IMAGE_REGISTRIES`).
//!
//! A reference is read as container runtimes read it: the first path
//! component is a registry host only when it contains a `.` or a `:`, is
//! `localhost`, or has upper-case letters; otherwise the image is on Docker
//! Hub (`docker.io`), whose one-component names live under `library/`. So
//! `redis:7` is `docker.io/library/redis:7`, `team/app` is
//! `docker.io/team/app`, and `localhost/app` and `host:5000/app` name their
//! own registries.

use std::fmt;

/// Docker Hub, where a reference without a registry host points.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy host name, the same registry.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Docker Hub's namespace of one-component names.
const OFFICIAL: &str = "library";

/// A parsed image reference, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, with its port when one is given (`docker.io` when the
    /// reference names none); lower-case.
    pub registry: String,
    /// Repository path inside the registry (`library/redis`).
    pub path: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), when given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `registry/path`: what the allow-list matches.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// Parses `reference`; the error says what is wrong with it.
    pub fn parse(reference: &str) -> Result<Self, String> {
        if reference.is_empty() {
            return Err("is empty".into());
        }
        if reference.len() > 4096 || reference.chars().any(|c| c.is_whitespace()) {
            return Err("is not an image reference".into());
        }
        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        if let Some(d) = digest
            && !is_digest(d)
        {
            return Err(format!("has a malformed digest {d:?}"));
        }
        // a `:` after the last `/` starts the tag (one before it is a port)
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag
            && !is_tag(t)
        {
            return Err(format!("has a malformed tag {t:?}"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry_host(first) => (first.to_ascii_lowercase(), rest),
            _ => (DOCKER_HUB.to_owned(), name),
        };
        if !valid_host(&registry) {
            return Err(format!("has a malformed registry host {registry:?}"));
        }
        if name.len() > 255 || path.is_empty() || !path.split('/').all(is_path_component) {
            return Err(format!(
                "has a malformed repository {name:?} (lower-case letters, digits and separators)"
            ));
        }
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL}/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            registry,
            path,
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether the first component of a name is a registry host, as container
/// runtimes decide it.
fn is_registry_host(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

/// `host[:port]`: DNS labels of letters, digits and inner `-`, or a
/// bracketed IPv6 address; an optional numeric port.
fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let labels_ok = host.starts_with('[')
        || (!name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
    port_ok && labels_ok
}

/// A repository path component: lower-case letters and digits, joined by
/// `.`, `_`, `__` or runs of `-`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: a word character, then up to 127 of word characters, `.` and `-`.
fn is_tag(t: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = t.chars();
    chars.next().is_some_and(word)
        && t.len() <= 128
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// A digest: `algorithm:hex`, at least 32 hex digits.
fn is_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
        && hex.len() >= 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// The registries (or repository prefixes within them) images may come
/// from; empty allows every image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedRegistries {
    /// Normalized prefixes, `host[:port][/path]`, without a trailing `/`.
    prefixes: Vec<String>,
}

impl AllowedRegistries {
    /// Reads a comma-separated list such as
    /// `registry.example.com/team/,localhost:5000`. Each entry starts with a
    /// registry host (`docker.io/library/` for Docker Hub's official
    /// images); blanks are skipped.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut prefixes = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let trimmed = entry.trim_end_matches('/');
            let (host, path) = match trimmed.split_once('/') {
                Some((h, p)) => (h, Some(p)),
                None => (trimmed, None),
            };
            if !is_registry_host(host) || !valid_host(&host.to_ascii_lowercase()) {
                return Err(format!(
                    "{entry:?} does not start with a registry host (write docker.io/{trimmed}/ for Docker Hub)"
                ));
            }
            if entry.contains('@') || path.is_some_and(|p| p.contains(':')) {
                return Err(format!(
                    "{entry:?} names a tag or digest; list registries or repository prefixes"
                ));
            }
            if let Some(p) = path
                && !p.split('/').all(is_path_component)
            {
                return Err(format!("{entry:?} has a malformed repository path"));
            }
            let mut host = host.to_ascii_lowercase();
            if host == DOCKER_HUB_LEGACY {
                host = DOCKER_HUB.to_owned();
            }
            prefixes.push(match path {
                Some(p) => format!("{host}/{p}"),
                None => host,
            });
        }
        Ok(Self { prefixes })
    }

    /// Whether no list is set (every image allowed).
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `image` is from an allowed registry: its repository is a
    /// prefix or lies below one, whole path components only
    /// (`registry.example.com/team` allows `registry.example.com/team/app`,
    /// not `registry.example.com/team-b/app`).
    pub fn allows(&self, image: &ImageRef) -> bool {
        if self.is_empty() {
            return true;
        }
        let repo = image.repository();
        self.prefixes.iter().any(|p| {
            repo == *p
                || repo
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Why `reference` is refused, or `None` when it is allowed.
    pub fn refuses(&self, reference: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        match ImageRef::parse(reference) {
            Err(why) => Some(format!("image {reference:?} {why}")),
            Ok(image) if self.allows(&image) => None,
            Ok(image) => Some(format!(
                "image {reference:?} ({}) is not from an allowed registry ({self})",
                image.repository(),
            )),
        }
    }
}

impl fmt::Display for AllowedRegistries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listed: Vec<String> = self.prefixes.iter().map(|p| format!("{p}/")).collect();
        f.write_str(&listed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(r: &str) -> (String, Option<String>, Option<String>) {
        let i = ImageRef::parse(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        (i.repository(), i.tag, i.digest)
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_read_as_container_runtimes_read_them() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            parts("redis:7"),
            ("docker.io/library/redis".into(), s("7"), None)
        );
        assert_eq!(
            parts("redis"),
            ("docker.io/library/redis".into(), None, None)
        );
        assert_eq!(
            parts("team/app:1.2"),
            ("docker.io/team/app".into(), s("1.2"), None)
        );
        assert_eq!(
            parts("docker.io/redis:7"),
            ("docker.io/library/redis".into(), s("7"), None)
        );
        assert_eq!(
            parts("index.docker.io/library/redis"),
            ("docker.io/library/redis".into(), None, None)
        );
        assert_eq!(parts("localhost/x"), ("localhost/x".into(), None, None));
        assert_eq!(
            parts("localhost:5000/x:dev"),
            ("localhost:5000/x".into(), s("dev"), None)
        );
        assert_eq!(
            parts("host:5000/x"),
            ("host:5000/x".into(), None, None),
            "a port makes the first component a registry"
        );
        assert_eq!(
            parts("registry.example.com/team/app"),
            ("registry.example.com/team/app".into(), None, None)
        );
        assert_eq!(
            parts("Registry.Example.com/team/app"),
            ("registry.example.com/team/app".into(), None, None)
        );
        assert_eq!(
            parts(&format!("registry.example.com/team/app@{DIGEST}")),
            ("registry.example.com/team/app".into(), None, s(DIGEST))
        );
        assert_eq!(
            parts(&format!("host:5000/app:1@{DIGEST}")),
            ("host:5000/app".into(), s("1"), s(DIGEST))
        );
        assert_eq!(
            parts(&format!("redis@{DIGEST}")),
            ("docker.io/library/redis".into(), None, s(DIGEST))
        );
        assert_eq!(
            parts("[::1]:5000/app"),
            ("[::1]:5000/app".into(), None, None)
        );
        assert_eq!(
            ImageRef::parse("redis:7").unwrap().to_string(),
            "docker.io/library/redis:7"
        );
    }

    #[test]
    fn malformed_references_say_why() {
        for bad in [
            "",
            "Redis",
            "team/App",
            "app:",
            "app:-x",
            "app@sha256:abc",
            "app@md5",
            "registry.example.com/",
            "registry.example.com//app",
            "app name",
            "-x.example.com/app",
            "host:port/app",
            "a/../b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn prefixes_match_whole_components_only() {
        let allowed = AllowedRegistries::parse(
            " registry.example.com/team/ ,localhost:5000,, docker.io/library",
        )
        .unwrap();
        let ok = |r: &str| allowed.allows(&ImageRef::parse(r).unwrap());
        assert!(ok("registry.example.com/team/app:1"));
        assert!(ok("registry.example.com/team/sub/app"));
        assert!(ok(&format!("registry.example.com/team/app@{DIGEST}")));
        assert!(ok("localhost:5000/anything/at/all"));
        assert!(ok("redis:7"), "docker.io/library/ allows official images");
        assert!(!ok("registry.example.com/team-b/app"));
        assert!(!ok("registry.example.com/app"));
        assert!(!ok("registry.example.com.example.org/team/app"));
        assert!(
            !ok("registry.example.com:443/team/app"),
            "another port, another registry"
        );
        assert!(!ok("localhost/app"), "localhost is not localhost:5000");
        assert!(!ok("team/app"), "docker.io/team is not docker.io/library");
        assert!(!ok("registry.example.org/team/app"));
        assert_eq!(
            allowed.to_string(),
            "registry.example.com/team/, localhost:5000/, docker.io/library/"
        );
        let refused = allowed.refuses("team/app:1").unwrap();
        assert!(
            refused.contains("docker.io/team/app")
                && refused.contains("registry.example.com/team/"),
            "{refused}"
        );
        assert!(allowed.refuses("registry.example.com/team/app").is_none());
        assert!(allowed.refuses("Bad Image").unwrap().contains("Bad Image"));
    }

    #[test]
    fn an_empty_list_allows_everything_and_bad_entries_are_refused() {
        let none = AllowedRegistries::parse(" , ").unwrap();
        assert!(none.is_empty());
        assert!(none.refuses("anything at all").is_none());
        for bad in [
            "team/",
            "redis",
            "registry.example.com/team/app:1",
            "registry.example.com/app@sha256:00",
            "registry.example.com/Team",
            "-bad.example.com",
        ] {
            assert!(
                AllowedRegistries::parse(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            AllowedRegistries::parse("index.docker.io/library/").unwrap(),
            AllowedRegistries::parse("docker.io/library").unwrap()
        );
    }
}
