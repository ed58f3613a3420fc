//! A protocol v0 workaround: `deepen-relative` hidden from the server's capability list (see
//! [`WithoutDeepenRelative`]). Every transport's reply goes through it.

/// A server's reply with `deepen-relative` taken out of a protocol v0 capability list.
///
/// Over protocol v0/v1, gix (0.90) asks for every capability the server offers, and
/// `deepen-relative` turns `deepen 1` into "one more commit below the client's shallow
/// boundary": for an empty cache repository there is none, so git's upload-pack sent the
/// whole history (traced against sshd without `AcceptEnv GIT_PROTOCOL`). Hiding the capability
/// keeps depth 1 absolute, as git means it. Only the first pkt-line can hold capabilities
/// (after a NUL); a protocol v2 reply starts with `version 2` and passes untouched.
pub(super) struct WithoutDeepenRelative<R> {
    inner: R,
    /// The first pkt-line, rewritten, still to be handed out; `None` once it has been.
    first: Option<(Vec<u8>, usize)>,
}

impl<R: std::io::Read> WithoutDeepenRelative<R> {
    pub(super) fn new(inner: R) -> Self {
        WithoutDeepenRelative {
            inner,
            first: Some((Vec::new(), 0)),
        }
    }

    /// No filtering: for answers that hold no capability list.
    pub(super) fn passthrough(inner: R) -> Self {
        WithoutDeepenRelative { inner, first: None }
    }

    /// Reads the first pkt-line whole and rewrites it; over smart HTTP, the service
    /// announcement and its flush come first and pass as they are.
    fn first_line(&mut self) -> std::io::Result<Vec<u8>> {
        let Some((raw, payload)) = self.pkt()? else {
            return Ok(Vec::new());
        };
        if !payload.starts_with(b"# service=") {
            return Ok(without_deepen_relative(raw, &payload));
        }
        let mut out = raw;
        if let Some((flush, _)) = self.pkt()? {
            out.extend_from_slice(&flush);
            if let Some((raw, payload)) = self.pkt()? {
                out.extend_from_slice(&without_deepen_relative(raw, &payload));
            }
        }
        Ok(out)
    }

    /// One pkt-line: its bytes as read and its payload (empty for flush and other special
    /// packets, and for anything that is not a pkt-line). `None` at the end of the stream.
    fn pkt(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut header = [0u8; 4];
        match self.inner.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = std::str::from_utf8(&header)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok());
        let Some(len) = len.filter(|&l| l > 4) else {
            return Ok(Some((header.to_vec(), Vec::new())));
        };
        let mut payload = vec![0u8; len - 4];
        self.inner.read_exact(&mut payload)?;
        Ok(Some(([&header[..], &payload].concat(), payload)))
    }
}

/// A pkt-line (`raw`, with its `payload`) with `deepen-relative` taken out of the capability
/// list that follows a NUL, if there is one.
fn without_deepen_relative(raw: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    let Some(nul) = payload.iter().position(|&b| b == 0) else {
        return raw;
    };
    let (refs, capabilities) = payload.split_at(nul);
    let capabilities: Vec<&[u8]> = capabilities[1..]
        .split(|&b| b == b' ')
        .filter(|c| *c != b"deepen-relative" && *c != b"deepen-relative\n")
        .collect();
    let mut line = refs.to_vec();
    line.push(0);
    line.extend_from_slice(&capabilities.join(&b' '));
    if payload.ends_with(b"\n") && !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    [format!("{:04x}", line.len() + 4).as_bytes(), &line].concat()
}

impl<R: std::io::Read> std::io::Read for WithoutDeepenRelative<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((pending, _)) = &self.first {
            if pending.is_empty() {
                let line = self.first_line()?;
                self.first = Some((line, 0));
            }
        }
        match &mut self.first {
            Some((line, at)) => {
                let n = buf.len().min(line.len() - *at);
                buf[..n].copy_from_slice(&line[*at..*at + n]);
                *at += n;
                if *at == line.len() {
                    self.first = None;
                }
                Ok(n)
            }
            None => self.inner.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WithoutDeepenRelative;
    use std::io::Read;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        [format!("{:04x}", payload.len() + 4).as_bytes(), payload].concat()
    }

    /// Reads everything through the filter, a few bytes at a time as a pipe would give them.
    fn filtered(input: Vec<u8>) -> Vec<u8> {
        let mut reader = WithoutDeepenRelative::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn deepen_relative_leaves_a_v0_capability_list_and_nothing_else_changes() {
        let sha = "aedcb21ac9f218e528d6838de7ec1f8a5121786d";
        let rest = [
            pkt(format!("{sha} refs/heads/main\n").as_bytes()),
            b"0000".to_vec(),
        ]
        .concat();
        for (offered, kept) in [
            (
                "multi_ack shallow deepen-since deepen-relative no-done agent=git/2.39.5\n",
                "multi_ack shallow deepen-since no-done agent=git/2.39.5\n",
            ),
            ("shallow deepen-relative\n", "shallow\n"),
            ("shallow ofs-delta", "shallow ofs-delta"),
        ] {
            let first = pkt(format!("{sha} HEAD\0{offered}").as_bytes());
            let want = pkt(format!("{sha} HEAD\0{kept}").as_bytes());
            assert_eq!(
                filtered([first, rest.clone()].concat()),
                [want, rest.clone()].concat(),
                "{offered:?}"
            );
        }
        // Smart HTTP: the service announcement and its flush come first.
        let service = [pkt(b"# service=git-upload-pack\n"), b"0000".to_vec()].concat();
        let first = pkt(format!("{sha} HEAD\0shallow deepen-relative agent=git\n").as_bytes());
        let want = pkt(format!("{sha} HEAD\0shallow agent=git\n").as_bytes());
        assert_eq!(
            filtered([service.clone(), first, rest.clone()].concat()),
            [service, want, rest.clone()].concat()
        );
        // Protocol v2 and an empty repository's flush pass untouched.
        let v2 = [
            pkt(b"version 2\n"),
            pkt(b"fetch=shallow\n"),
            b"0000".to_vec(),
        ]
        .concat();
        assert_eq!(filtered(v2.clone()), v2);
        assert_eq!(filtered(b"0000".to_vec()), b"0000");
    }
}
