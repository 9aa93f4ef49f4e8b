//! Container image references and the registry allow-list
//! (`PARLEY_ALLOWED_IMAGE_REGISTRIES`).
//!
//! A reference is read as container runtimes read it: the first path
//! component is a registry host only when it contains a `.` or a `:`, is
//! `localhost`, or has upper-case letters. A reference without one names
//! the container runtime's default registry, whose one-component names
//! live under `library/`: `redis:7` is `library/redis:7` there and
//! `team/app` is `team/app` there, while `localhost/app` and
//! `host:5000/app` name their own registries. This module never assumes
//! which host the default registry is: a reference naming a host is that
//! host's, even when the runtime's default happens to be the same one.
//!
//! The allow-list matches the same way. An entry without a registry host
//! (`library/`, `team/`) allows only references without one; an entry
//! starting with a host allows only references naming that host. So a
//! reference naming the default registry's host explicitly is refused by a
//! list that only has host-less entries: in doubt the list refuses rather
//! than allows. Host-less entries trust whatever registry the nodes'
//! runtime resolves unqualified names to; list hosts to pin it.

use std::fmt;

/// The default registry's namespace of one-component names.
const OFFICIAL: &str = "library";

/// A parsed image reference, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, with its port when one is given, lower-case; `None`
    /// when the reference names none: the container runtime's default
    /// registry.
    pub registry: Option<String>,
    /// Repository path inside the registry, as written, except that a
    /// one-component name on the default registry lies under `library/`
    /// (`redis` is `library/redis`).
    pub path: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), when given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `registry/path`, or `path` on the default registry: itself a
    /// reference naming the same repository.
    pub fn repository(&self) -> String {
        match &self.registry {
            Some(host) => format!("{host}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The repository as a reader should see it: `repository()`, saying so
    /// when it is on the runtime's default registry.
    fn described(&self) -> String {
        match &self.registry {
            Some(_) => self.repository(),
            None => format!("{} on the container runtime's default registry", self.path),
        }
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
            Some((first, rest)) if is_registry_host(first) => {
                (Some(first.to_ascii_lowercase()), rest)
            }
            _ => (None, name),
        };
        if let Some(host) = &registry
            && !valid_host(host)
        {
            return Err(format!("has a malformed registry host {host:?}"));
        }
        if name.len() > 255 || path.is_empty() || !path.split('/').all(is_path_component) {
            return Err(format!(
                "has a malformed repository {name:?} (lower-case letters, digits and separators)"
            ));
        }
        let path = if registry.is_none() && !path.contains('/') {
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

/// One allow-list entry: a registry (`None`: the runtime's default) and
/// optionally a repository prefix inside it, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    registry: Option<String>,
    path: Option<String>,
}

impl Prefix {
    /// Whether `image` is in this registry and, with a path, at or below
    /// it, whole path components only.
    fn matches(&self, image: &ImageRef) -> bool {
        self.registry == image.registry
            && self.path.as_deref().is_none_or(|p| {
                image.path == p
                    || image
                        .path
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = &self.registry {
            write!(f, "{host}/")?;
        }
        if let Some(path) = &self.path {
            write!(f, "{path}/")?;
        }
        Ok(())
    }
}

/// The registries (or repository prefixes within them) images may come
/// from; empty allows every image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedRegistries {
    prefixes: Vec<Prefix>,
}

impl AllowedRegistries {
    /// Reads a comma-separated list such as
    /// `registry.example.com/team/,localhost:5000,library/`; blanks are
    /// skipped. An entry starting with a registry host (as references are
    /// read) allows that host, or a repository prefix in it; an entry
    /// without one is a repository prefix on the runtime's default registry
    /// (`library/` for its official images). A host-less entry of one
    /// component must end in `/`: `redis` could mean the official image
    /// (`library/redis`) or the namespace `redis/`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut prefixes = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let trimmed = entry.trim_end_matches('/');
            let (registry, path) = match trimmed.split_once('/') {
                Some((first, rest)) if is_registry_host(first) => (Some(first), Some(rest)),
                None if is_registry_host(trimmed) => (Some(trimmed), None),
                _ => (None, Some(trimmed)),
            };
            if entry.contains('@') || path.is_some_and(|p| p.contains(':')) {
                return Err(format!(
                    "{entry:?} names a tag or digest; list registries or repository prefixes"
                ));
            }
            let registry = registry.map(str::to_ascii_lowercase);
            if let Some(host) = &registry
                && !valid_host(host)
            {
                return Err(format!("{entry:?} has a malformed registry host"));
            }
            if let Some(p) = path
                && !p.split('/').all(is_path_component)
            {
                return Err(format!(
                    "{entry:?} has a malformed repository path (lower-case letters, digits and separators)"
                ));
            }
            if let (None, Some(p)) = (&registry, path)
                && !p.contains('/')
                && !entry.ends_with('/')
            {
                return Err(format!(
                    "{entry:?} is one name without a registry host: write `{p}/` for everything under {p}/ on the container runtime's default registry, `{OFFICIAL}/{p}` for its official image {p}, or start the entry with a registry host"
                ));
            }
            prefixes.push(Prefix {
                registry,
                path: path.map(str::to_owned),
            });
        }
        Ok(Self { prefixes })
    }

    /// Whether no list is set (every image allowed).
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `image` is from an allowed registry: an entry names its
    /// registry (or, without a host, it names none either) and the entry's
    /// path, if any, is its repository or lies above it, whole path
    /// components only (`registry.example.com/team` allows
    /// `registry.example.com/team/app`, not `registry.example.com/team-b/app`;
    /// `team/` allows `team/app`, not `registry.example.com/team/app`).
    pub fn allows(&self, image: &ImageRef) -> bool {
        self.is_empty() || self.prefixes.iter().any(|p| p.matches(image))
    }

    /// Why `reference` is refused, or `None` when it is allowed.
    pub fn refuses(&self, reference: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let image = match ImageRef::parse(reference) {
            Err(why) => return Some(format!("image {reference:?} {why}")),
            Ok(image) if self.allows(&image) => return None,
            Ok(image) => image,
        };
        // a hint, when one helps, after the list and inside its parentheses
        // (refusals are joined with `; ` in the status)
        let hint = match &image.registry {
            None if image.path.starts_with(&format!("{OFFICIAL}/")) => format!(
                "; write `{OFFICIAL}/` to allow the runtime's default registry's official images"
            ),
            // the same repository written without a host would be allowed
            Some(host)
                if ImageRef::parse(&image.path)
                    .is_ok_and(|r| r.registry.is_none() && self.allows(&r)) =>
            {
                format!(
                    "; entries without a registry host allow only images without one: list `{host}/` or a prefix in it for this one"
                )
            }
            _ => String::new(),
        };
        let why = format!(
            "image {reference:?} ({}) is not from an allowed registry ({self}{hint})",
            image.described(),
        );
        Some(why)
    }
}

impl fmt::Display for AllowedRegistries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listed: Vec<String> = self.prefixes.iter().map(ToString::to_string).collect();
        f.write_str(&listed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(registry, path, tag, digest)` of `r`.
    fn parts(r: &str) -> (Option<String>, String, Option<String>, Option<String>) {
        let i = ImageRef::parse(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        (i.registry, i.path, i.tag, i.digest)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_read_as_container_runtimes_read_them() {
        // no host: the runtime's default registry, one-component names
        // under library/
        assert_eq!(
            parts("redis:7"),
            (None, "library/redis".into(), s("7"), None)
        );
        assert_eq!(parts("redis"), (None, "library/redis".into(), None, None));
        assert_eq!(
            parts("library/redis"),
            (None, "library/redis".into(), None, None)
        );
        assert_eq!(
            parts("team/app:1.2"),
            (None, "team/app".into(), s("1.2"), None)
        );
        assert_eq!(
            parts(&format!("redis@{DIGEST}")),
            (None, "library/redis".into(), None, s(DIGEST))
        );
        // a named host keeps the path as written, whichever host it is
        assert_eq!(
            parts("registry.example.com/redis:7"),
            (s("registry.example.com"), "redis".into(), s("7"), None)
        );
        assert_eq!(
            parts("localhost/x"),
            (s("localhost"), "x".into(), None, None)
        );
        assert_eq!(
            parts("localhost:5000/x:dev"),
            (s("localhost:5000"), "x".into(), s("dev"), None)
        );
        assert_eq!(
            parts("host:5000/x"),
            (s("host:5000"), "x".into(), None, None),
            "a port makes the first component a registry"
        );
        assert_eq!(
            parts("registry.example.com/team/app"),
            (s("registry.example.com"), "team/app".into(), None, None)
        );
        assert_eq!(
            parts("Registry.Example.com/team/app"),
            (s("registry.example.com"), "team/app".into(), None, None)
        );
        assert_eq!(
            parts(&format!("registry.example.com/team/app@{DIGEST}")),
            (
                s("registry.example.com"),
                "team/app".into(),
                None,
                s(DIGEST)
            )
        );
        assert_eq!(
            parts(&format!("host:5000/app:1@{DIGEST}")),
            (s("host:5000"), "app".into(), s("1"), s(DIGEST))
        );
        assert_eq!(
            parts("[::1]:5000/app"),
            (s("[::1]:5000"), "app".into(), None, None)
        );
        // the written form is a reference to the same image
        for r in [
            "redis:7",
            "team/app:1.2",
            "localhost/x",
            &format!("registry.example.com/team/app:1@{DIGEST}"),
        ] {
            let image = ImageRef::parse(r).unwrap();
            assert_eq!(ImageRef::parse(&image.to_string()), Ok(image), "{r}");
        }
        assert_eq!(
            ImageRef::parse("redis:7").unwrap().to_string(),
            "library/redis:7"
        );
        assert_eq!(
            ImageRef::parse("localhost:5000/x:dev").unwrap().to_string(),
            "localhost:5000/x:dev"
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
        let allowed =
            AllowedRegistries::parse(" registry.example.com/team/ ,localhost:5000,, library/")
                .unwrap();
        let ok = |r: &str| allowed.allows(&ImageRef::parse(r).unwrap());
        assert!(ok("registry.example.com/team/app:1"));
        assert!(ok("registry.example.com/team/sub/app"));
        assert!(ok(&format!("registry.example.com/team/app@{DIGEST}")));
        assert!(ok("localhost:5000/anything/at/all"));
        assert!(
            ok("redis:7"),
            "library/ allows the default registry's official images"
        );
        assert!(ok("library/redis"));
        assert!(ok(&format!("mongo@{DIGEST}")));
        assert!(!ok("registry.example.com/team-b/app"));
        assert!(!ok("registry.example.com/app"));
        assert!(!ok("registry.example.com.example.org/team/app"));
        assert!(
            !ok("registry.example.com:443/team/app"),
            "another port, another registry"
        );
        assert!(!ok("localhost/app"), "localhost is not localhost:5000");
        assert!(!ok("team/app"), "team/ is not library/");
        assert!(!ok("library-b/redis"));
        assert!(!ok("registry.example.org/team/app"));
        assert_eq!(
            allowed.to_string(),
            "registry.example.com/team/, localhost:5000/, library/"
        );
        let refused = allowed.refuses("team/app:1").unwrap();
        assert!(
            refused.contains("(team/app on the container runtime's default registry)")
                && refused.contains("registry.example.com/team/, localhost:5000/, library/"),
            "{refused}"
        );
        assert!(allowed.refuses("registry.example.com/team/app").is_none());
        assert!(allowed.refuses("redis:7").is_none());
        assert!(allowed.refuses("Bad Image").unwrap().contains("Bad Image"));
    }

    #[test]
    fn entries_with_and_without_a_host_match_only_references_alike() {
        // without a host: references without one, never one naming a host,
        // even a host that may be the runtime's default
        let hostless = AllowedRegistries::parse("team/,library/").unwrap();
        let ok = |r: &str| hostless.allows(&ImageRef::parse(r).unwrap());
        assert!(ok("team/app"));
        assert!(ok("team/sub/app:1"));
        assert!(ok("redis:7"));
        assert!(!ok("team-b/app"));
        assert!(!ok("registry.example.com/team/app"));
        assert!(!ok("registry.example.com/library/redis:7"));
        assert!(!ok("localhost/team/app"));
        let refused = hostless
            .refuses("registry.example.com/library/redis:7")
            .unwrap();
        assert!(
            refused.contains("(registry.example.com/library/redis)")
                && refused.contains("list `registry.example.com/`"),
            "{refused}"
        );
        let refused = hostless.refuses("registry.example.com/redis").unwrap();
        assert!(
            refused.contains("list `registry.example.com/`"),
            "written without the host it would be library/redis: {refused}"
        );
        let refused = hostless.refuses("registry.example.org/other/app").unwrap();
        assert!(
            !refused.contains("without a registry host"),
            "no hint when the host-less form is refused too: {refused}"
        );

        // with a host: that host only, never a reference without one
        let hosted = AllowedRegistries::parse("registry.example.com/library/").unwrap();
        let ok = |r: &str| hosted.allows(&ImageRef::parse(r).unwrap());
        assert!(ok("registry.example.com/library/redis:7"));
        assert!(!ok("redis:7"));
        assert!(!ok("library/redis"));
        let refused = hosted.refuses("mongo:7.0").unwrap();
        assert!(
            refused.contains("(library/mongo on the container runtime's default registry)")
                && refused.contains(
                    "write `library/` to allow the runtime's default registry's official images"
                ),
            "{refused}"
        );
        let refused = hosted.refuses("team/app").unwrap();
        assert!(
            !refused.contains("official images"),
            "the official-images hint is for library/ only: {refused}"
        );
    }

    #[test]
    fn an_empty_list_allows_everything_and_bad_entries_are_refused() {
        let none = AllowedRegistries::parse(" , ").unwrap();
        assert!(none.is_empty());
        assert!(none.refuses("anything at all").is_none());
        for bad in [
            "redis",
            "library",
            "/",
            "team//app",
            "team/App",
            "team/app:1",
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
        let why = AllowedRegistries::parse("redis").unwrap_err();
        assert!(
            why.contains("`redis/`") && why.contains("`library/redis`"),
            "{why}"
        );
        assert_eq!(
            AllowedRegistries::parse("Registry.Example.com/team/").unwrap(),
            AllowedRegistries::parse("registry.example.com/team").unwrap()
        );
        assert_eq!(
            AllowedRegistries::parse("team/app").unwrap(),
            AllowedRegistries::parse("team/app/").unwrap(),
            "two components need no trailing /"
        );
        assert_ne!(
            AllowedRegistries::parse("library/").unwrap(),
            AllowedRegistries::parse("localhost/library/").unwrap()
        );
    }
}
