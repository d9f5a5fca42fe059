//! An image reference as `docker pull` takes it: `[host[:port]/]name[:tag][@sha256:<hex>]`.
//! A first component with a `.` or a `:`, or `localhost`, is a registry
//! host; otherwise the image is on Docker Hub (`registry-1.docker.io`,
//! `library/` for a one-part name). No tag and no digest means `latest`.
//! Parsing only: the admin API does the network I/O.

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry's host as given (`registry.example.com`, `127.0.0.1:5000`),
    /// `docker.io` for Docker Hub: the name credentials are kept under.
    pub host: String,
    /// The repository (`team/fn`).
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`, when the reference pins one.
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{reference:?} is not an image reference ([host[:port]/]name[:tag][@sha256:<hex>]): {why}")]
pub struct ReferenceError {
    pub reference: String,
    pub why: String,
}

const DOCKER_HUB: &str = "docker.io";

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |why: &str| ReferenceError {
            reference: s.to_string(),
            why: why.to_string(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                super::sha256_hex(d).map_err(|_| err("the digest must be sha256:<64 lowercase hex>"))?;
                (rest, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(err("bad registry host"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), Some(tag.to_string())),
            _ => (path, None),
        };
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                || t.starts_with(['.', '-']))
        {
            return Err(err("a tag is 1 to 128 of A-Za-z0-9_.- (not starting with . or -)"));
        }
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                    && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            });
        if !repo_ok {
            return Err(err(
                "the repository is lowercase components of a-z0-9._- separated by /",
            ));
        }
        let repository = if host == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        Ok(Reference {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when pinned, else the tag
    /// (`latest` when none is given).
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The host the registry API answers on (Docker Hub's is not its name).
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_pull_reads_them() {
        let r = Reference::parse("registry.example.com/team/fn:1.4").unwrap();
        assert_eq!(
            (
                r.host.as_str(),
                r.repository.as_str(),
                r.tag.as_deref(),
                r.digest.as_deref()
            ),
            ("registry.example.com", "team/fn", Some("1.4"), None)
        );
        assert_eq!(r.manifest_ref(), "1.4");
        let r = Reference::parse("127.0.0.1:5000/fn").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.manifest_ref()),
            ("127.0.0.1:5000", "fn", "latest")
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("localhost:5000/a/b:t@{d}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.manifest_ref()), (Some("t"), d.as_str()));
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.api_host()),
            ("docker.io", "library/busybox", "registry-1.docker.io")
        );
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.host, "localhost");
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "reg.example/Team/fn",
            "reg.example/fn:",
            "reg.example/fn@sha256:abc",
            "reg.example/fn@md5:00",
            "reg.example//fn",
            "reg.example/fn:-x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
