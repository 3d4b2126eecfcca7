//! Server-Sent Events framing: an incremental parser that splits an upstream byte stream into
//! event blocks without copying or re-encoding them, and a writer that rewrites only the `id`
//! field of a block.
//!
//! Follows the WHATWG HTML "Server-sent events" parsing rules (§9.2.6, "Interpreting an event
//! stream"): lines end in CRLF, LF or a lone CR; a blank line ends a block; a line starting with
//! `:` is a comment; `field: value` strips one space after the colon. The proxy owns only the `id`
//! line: every other line (`data`, `event`, `retry`, comments, unknown fields) passes byte for byte.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// One SSE block (the lines up to and including the blank line that ends it), as raw bytes.
#[derive(Debug, Clone)]
pub struct SseBlock {
    /// The block's bytes exactly as received, including the terminating blank line.
    raw: Bytes,
    /// What the parser noted of its lines.
    noted: BlockFields,
}

/// What the parser notes of a block's lines while it assembles it, handed to the block whole
/// when it is complete. Ranges are within the block's bytes.
#[derive(Debug, Clone, Default)]
struct BlockFields {
    /// Where the block's `id` lines are, to replace them.
    id_lines: IdLines,
    /// Byte range of the value of the last `id` field, if the block has one (per the SSE rules
    /// the last one wins; an id containing NUL is ignored).
    id_value: Option<Range<usize>>,
    /// Whether the block has at least one `data` field: only such blocks dispatch an event.
    has_data: bool,
    /// Whether the block has a `retry` field (so [`SseBlock::retry_ms`] scans only then).
    has_retry: bool,
    /// Byte range of the first `data` field's value.
    first_data: Option<Range<usize>>,
    /// Whether the block has more than one `data` field (so [`SseBlock::data`] joins them).
    more_data: bool,
    /// Whether the block starts with the stream's leading byte order mark (the first block
    /// only), which a rewrite keeps in front of the `id` line it writes.
    bom: bool,
}

/// The `id` lines of a block: almost always none or one. Only the first is kept (its range,
/// line terminator included); a block with more is rescanned when it is rewritten, so an
/// upstream that repeats `id:` thousands of times in one block costs no memory per line.
#[derive(Debug, Clone, Default)]
struct IdLines {
    first: Option<Range<usize>>,
    /// Whether more `id` lines follow the first.
    more: bool,
}

impl IdLines {
    fn push(&mut self, line: Range<usize>) {
        if self.first.is_none() {
            self.first = Some(line);
        } else {
            self.more = true;
        }
    }
}

impl SseBlock {
    /// The raw bytes of the block as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The upstream's event id, if the block carries a valid `id` field (may be empty, which in
    /// SSE resets the client's last event id).
    pub fn id(&self) -> Option<&str> {
        let range = self.noted.id_value.clone()?;
        std::str::from_utf8(&self.raw[range]).ok()
    }

    /// Whether the block carries an `id` field.
    pub fn has_id(&self) -> bool {
        self.noted.id_value.is_some()
    }

    /// Whether the block dispatches an event (has a `data` field). Blocks with only comments,
    /// `retry` or `event` lines do not.
    pub fn has_data(&self) -> bool {
        self.noted.has_data
    }

    /// The value of the `retry` field (milliseconds), if the block has a valid one.
    pub fn retry_ms(&self) -> Option<u64> {
        if !self.noted.has_retry {
            return None;
        }
        self.fields()
            .filter(|(name, _)| *name == b"retry")
            .last()
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
    }

    /// The event's data: the `data` field values joined with `\n`, as the SSE rules dispatch it.
    /// Borrowed when the event has one `data` line.
    pub fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        if !self.noted.more_data {
            let range = self.noted.first_data.clone().unwrap_or_default();
            return std::borrow::Cow::Borrowed(&self.raw[range]);
        }
        let mut values = self
            .fields()
            .filter(|(name, _)| *name == b"data")
            .map(|(_, v)| v);
        let Some(first) = values.next() else {
            return std::borrow::Cow::Borrowed(&[]);
        };
        let Some(second) = values.next() else {
            return std::borrow::Cow::Borrowed(first);
        };
        let mut joined = first.to_vec();
        for v in std::iter::once(second).chain(values) {
            joined.push(b'\n');
            joined.extend_from_slice(v);
        }
        std::borrow::Cow::Owned(joined)
    }

    /// The block's fields as (name, value) pairs, comments skipped.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // The stream's byte order mark is not part of the first field's name.
        let mut rest: &[u8] = &self.raw[if self.noted.bom { BOM.len() } else { 0 }..];
        std::iter::from_fn(move || {
            loop {
                if rest.is_empty() {
                    return None;
                }
                let (end, next) = find_line_end(rest, 0).unwrap_or((rest.len(), rest.len()));
                let line = &rest[..end];
                rest = &rest[next..];
                if line.is_empty() || line[0] == b':' {
                    continue;
                }
                return Some(match line.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (line, &line[line.len()..]),
                });
            }
        })
    }

    /// Appends the block to `out` with its `id` lines replaced by one `id: {new_id}` line
    /// placed first — after the stream's byte order mark and the blank lines the block starts
    /// with, which dispatch nothing and must not separate the id from its event; every other
    /// byte passes unchanged, except that an `id` line following a line ended by a lone CR takes
    /// that CR's place with its own line end (so the CR cannot pair with an LF after the
    /// removed line into one CRLF and swallow a line end). `new_id` must not contain CR, LF or
    /// NUL.
    pub fn write_with_id(&self, new_id: &str, out: &mut BytesMut) {
        self.write_with_id_from(out, |out| out.put_slice(new_id.as_bytes()));
    }

    /// [`Self::write_with_id`], with the new id written into `out` by `write_id` (so a caller can
    /// format it in place, without building a `String` per event). `write_id` must not write
    /// CR, LF or NUL.
    pub fn write_with_id_from(&self, out: &mut BytesMut, write_id: impl FnOnce(&mut BytesMut)) {
        out.reserve(self.raw.len() + 64);
        let raw = &self.raw[..];
        // The stream's byte order mark stays first: a client ignores it only there.
        let start = if self.noted.bom {
            out.put_slice(BOM);
            BOM.len()
        } else {
            0
        };
        let content = start
            + raw[start..]
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
        out.put_slice(&raw[start..content]);
        out.put_slice(b"id: ");
        write_id(out);
        out.put_u8(b'\n');
        let Some(first) = self.noted.id_lines.first.clone() else {
            out.put_slice(&raw[content..]);
            return;
        };
        // Only a block with several `id` lines is searched past its first one.
        let searched = if self.noted.id_lines.more {
            raw.len()
        } else {
            first.end
        };
        let mut at = content;
        let mut line = first.start;
        while line < searched {
            let (end, next) = match find_line_end(raw, line) {
                Ok(found) => found,
                // A lone CR ending the block: a line end all the same.
                Err(cr) if cr < raw.len() => (cr, raw.len()),
                Err(_) => (raw.len(), raw.len()),
            };
            if field_name(&raw[line..end]) == b"id" {
                // `at < line`: the CR is still to be copied (not the end of an `id` line
                // already dropped).
                if line > content && at < line && raw[line - 1] == b'\r' {
                    out.put_slice(&raw[at..line - 1]);
                    at = end;
                } else {
                    out.put_slice(&raw[at..line]);
                    at = next;
                }
            }
            line = next;
        }
        out.put_slice(&raw[at..]);
    }
}

impl SseBlock {
    /// The block with its event data replaced by `data`: one `data: ` line per line of `data`,
    /// where the block's first `data` line was, its other `data` lines left out; every other
    /// line (`id`, `event`, `retry`, comments) and the line ends around them pass unchanged.
    /// What the proxy sends on when an interceptor changed the event's message
    /// (`proxy::intercept`). A block without `data` is returned as it is.
    pub fn with_data(&self, data: &[u8]) -> SseBlock {
        if !self.noted.has_data {
            return self.clone();
        }
        let raw = &self.raw[..];
        let mut out = BytesMut::with_capacity(raw.len() + data.len() + 16);
        let mut at = if self.noted.bom {
            out.put_slice(BOM);
            BOM.len()
        } else {
            0
        };
        let mut written = false;
        while at < raw.len() {
            let (end, next) = match find_line_end(raw, at) {
                Ok(found) => found,
                Err(cr) if cr < raw.len() => (cr, raw.len()),
                Err(_) => (raw.len(), raw.len()),
            };
            let line = &raw[at..end];
            if line.first().is_some_and(|&b| b != b':') && field_name(line) == b"data" {
                if !written {
                    for part in data.split(|&b| b == b'\n') {
                        out.put_slice(b"data: ");
                        out.put_slice(part.strip_suffix(b"\r").unwrap_or(part));
                        out.put_u8(b'\n');
                    }
                    written = true;
                }
            } else {
                out.put_slice(&raw[at..next]);
            }
            at = next;
        }
        let mut parser = SseParser::new(usize::MAX);
        parser.push(&out);
        match parser.next_block() {
            Ok(Some(block)) => block,
            // Not reached: the block's own lines and its blank line are all still there.
            _ => self.clone(),
        }
    }
}

/// The parser gave up on the stream.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// One block grew past the configured limit without a terminating blank line.
    #[error("SSE event exceeds {limit} bytes without a blank line")]
    EventTooLarge {
        /// `proxy.max_event_bytes`, in bytes.
        limit: usize,
    },
}

/// Incremental SSE parser. Feed it chunks with [`SseParser::push`] and take complete blocks with
/// [`SseParser::next_block`]; memory is bounded by `max_event_bytes` plus one chunk.
#[derive(Debug)]
pub struct SseParser {
    buf: BytesMut,
    /// Where the unfinished line starts (all bytes before it are in complete lines).
    scan: usize,
    /// How far the unfinished line was searched for its end without finding one: the next
    /// search starts there, so each byte is searched once however the line arrives in pieces.
    searched: usize,
    /// What was noted of the lines of the block being assembled.
    block: BlockFields,
    /// Whether anything but blank lines was seen since the last block.
    has_content: bool,
    max_event_bytes: usize,
    /// A leading UTF-8 byte order mark has been checked for.
    bom_checked: bool,
    /// Bytes examined while looking for line ends (the unit tests' measure of parsing work).
    #[cfg(test)]
    scanned: usize,
}

impl SseParser {
    /// A parser that rejects a block larger than `max_event_bytes` bytes.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scan: 0,
            searched: 0,
            block: BlockFields::default(),
            has_content: false,
            max_event_bytes,
            bom_checked: false,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Appends bytes received from the upstream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Takes the next complete block, if the buffered bytes hold one. Blank lines between blocks
    /// that carry nothing are folded into the next block's bytes, so no input byte is lost.
    pub fn next_block(&mut self) -> Result<Option<SseBlock>, SseError> {
        if !self.bom_checked {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return Ok(None);
            }
            self.bom_checked = true;
            if self.buf.starts_with(BOM) {
                self.scan = BOM.len();
                self.block.bom = true;
            }
        }
        loop {
            let from = self.scan.max(self.searched);
            let found = find_line_end(&self.buf, from);
            #[cfg(test)]
            {
                self.scanned += found.map_or_else(|resume| resume, |(end, _)| end + 1) - from;
            }
            let (line_end, next) = match found {
                Ok(line) => line,
                Err(resume) => {
                    self.searched = resume;
                    if self.buf.len() > self.max_event_bytes {
                        return Err(SseError::EventTooLarge {
                            limit: self.max_event_bytes,
                        });
                    }
                    return Ok(None);
                }
            };
            let start = self.scan;
            self.scan = next;
            if line_end == start {
                if !self.has_content {
                    // A blank line with no block before it: keep it with the next block.
                    continue;
                }
                return Ok(Some(self.finish_block()));
            }
            self.has_content = true;
            let line = &self.buf[start..line_end];
            let (name, value_start) = match memchr::memchr(b':', line) {
                Some(0) => continue, // comment
                Some(colon) => {
                    let mut v = start + colon + 1;
                    if self.buf.get(v) == Some(&b' ') && v < line_end {
                        v += 1;
                    }
                    (&line[..colon], v)
                }
                None => (line, line_end),
            };
            match name {
                b"data" => {
                    self.block.has_data = true;
                    if self.block.first_data.is_none() {
                        self.block.first_data = Some(value_start..line_end);
                    } else {
                        self.block.more_data = true;
                    }
                }
                b"retry" => self.block.has_retry = true,
                b"id" => {
                    self.block.id_lines.push(start..next);
                    let value = value_start..line_end;
                    if !self.buf[value.clone()].contains(&0) {
                        self.block.id_value = Some(value);
                    }
                }
                _ => {}
            }
        }
    }

    /// Bytes held that do not yet form a complete block.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    fn finish_block(&mut self) -> SseBlock {
        let raw = self.buf.split_to(self.scan).freeze();
        self.scan = 0;
        self.searched = 0;
        self.has_content = false;
        SseBlock {
            raw,
            noted: std::mem::take(&mut self.block),
        }
    }
}

/// The UTF-8 byte order mark, which a client ignores at the start of a stream only.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Finds the end of the line that has no line end before `from`: returns (end of content,
/// start of next line), or `Err` with where to search again once more bytes arrived. A CR at
/// the very end of the buffer is not yet a line end: an LF may follow in the next chunk.
fn find_line_end(buf: &[u8], from: usize) -> Result<(usize, usize), usize> {
    let Some(rel) = memchr::memchr2(b'\n', b'\r', &buf[from..]) else {
        return Err(buf.len());
    };
    let end = from + rel;
    if buf[end] == b'\n' {
        return Ok((end, end + 1));
    }
    match buf.get(end + 1) {
        Some(b'\n') => Ok((end, end + 2)),
        Some(_) => Ok((end, end + 1)),
        None => Err(end),
    }
}

/// The field name of a line (without its terminator): up to the first colon, or the whole
/// line; empty for a comment.
fn field_name(line: &[u8]) -> &[u8] {
    match memchr::memchr(b':', line) {
        Some(colon) => &line[..colon],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_data_replaces_the_data_lines_only() {
        let block = &blocks(&[b"\xEF\xBB\xBF: c\r\nid: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\nretry: 5\r\n\r\n"])[0];
        let changed = block.with_data(b"{\"b\":2}\nsecond");
        assert_eq!(
            &changed.raw()[..],
            b"\xEF\xBB\xBF: c\r\nid: 7\r\nevent: message\r\ndata: {\"b\":2}\ndata: second\nretry: 5\r\n\r\n"
        );
        assert_eq!(changed.id(), Some("7"));
        assert_eq!(&changed.data()[..], b"{\"b\":2}\nsecond");
        assert_eq!(changed.retry_ms(), Some(5));
        let comment = &blocks(&[b": only\n\n"])[0];
        assert_eq!(comment.with_data(b"x").raw(), comment.raw());
    }

    fn blocks(input: &[&[u8]]) -> Vec<SseBlock> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input {
            p.push(chunk);
            while let Some(b) = p.next_block().unwrap() {
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn splits_blocks_across_chunk_boundaries_and_line_endings() {
        let got = blocks(&[
            b"id: 1\r\ndata: a\r",
            b"\n\r\nid:2\rdata:b\r\r",
            b"event: x\ndata: c\ndata: d\n\n",
        ]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id(), Some("1"));
        assert_eq!(&got[0].raw()[..], b"id: 1\r\ndata: a\r\n\r\n");
        assert_eq!(got[1].id(), Some("2"));
        assert_eq!(got[2].id(), None);
        assert!(got[2].has_data());
    }

    #[test]
    fn comments_and_retry_only_blocks_carry_no_event() {
        let got = blocks(&[b": keep-alive\n\nretry: 5000\n\n"]);
        assert_eq!(got.len(), 2);
        assert!(!got[0].has_data() && !got[0].has_id());
        assert_eq!(&got[0].raw()[..], b": keep-alive\n\n");
        assert!(!got[1].has_data());
    }

    #[test]
    fn priming_event_has_id_and_empty_data() {
        let got = blocks(&[b"id: abc\ndata:\n\n"]);
        assert_eq!(got[0].id(), Some("abc"));
        assert!(got[0].has_data());
    }

    #[test]
    fn rewrites_only_the_id_line() {
        let got = blocks(&[b"event: message\nid: up-7\ndata: {\"progress\":1}\nretry: 10\n\n"]);
        let mut out = BytesMut::new();
        got[0].write_with_id("s1:1:up-7", &mut out);
        assert_eq!(
            &out[..],
            b"id: s1:1:up-7\nevent: message\ndata: {\"progress\":1}\nretry: 10\n\n"
        );
    }

    #[test]
    fn last_id_field_wins_and_nul_ids_are_ignored() {
        let got = blocks(&[b"id: a\nid: b\ndata: x\n\nid: c\0d\ndata: y\n\n"]);
        assert_eq!(got[0].id(), Some("b"));
        assert_eq!(got[1].id(), None);
        let mut out = BytesMut::new();
        got[0].write_with_id("n", &mut out);
        assert_eq!(&out[..], b"id: n\ndata: x\n\n");
    }

    #[test]
    fn every_id_line_of_a_block_is_replaced_whatever_its_line_ending() {
        let got = blocks(&[b"id: a\r\nevent: m\rid\r\n: id: comment\nid: b\ndata: x\r\n\r\n"]);
        assert_eq!(got[0].id(), Some("b"));
        let mut out = BytesMut::new();
        got[0].write_with_id("n", &mut out);
        // The `id` line after `event: m`'s lone CR takes the CR's place with its own CRLF.
        assert_eq!(
            &out[..],
            b"id: n\nevent: m\r\n: id: comment\ndata: x\r\n\r\n"
        );
    }

    #[test]
    fn id_lines_one_after_another_with_lone_cr_ends_are_all_dropped() {
        let got = blocks(&[b"id: a\rid: b\rdata: x\rid: c\r\rdata: next\n\n"]);
        let mut out = BytesMut::new();
        got[0].write_with_id("n", &mut out);
        assert_eq!(&out[..], b"id: n\ndata: x\r\r");
        let again = blocks(&[&out[..], b"data: next\n\n"]);
        assert_eq!(again.len(), 2);
        assert_eq!((again[0].id(), &*again[0].data()), (Some("n"), &b"x"[..]));
    }

    #[test]
    fn an_oversized_comment_is_an_error_before_it_is_buffered_whole() {
        let mut p = SseParser::new(1024);
        p.push(b": ");
        for _ in 0..4 {
            assert!(matches!(p.next_block(), Ok(None)));
            p.push(&[b'x'; 256]);
        }
        assert!(matches!(
            p.next_block(),
            Err(SseError::EventTooLarge { limit: 1024 })
        ));
        assert!(p.buffered_len() <= 1024 + 256);
    }

    #[test]
    fn data_lines_join_with_newlines_and_retry_parses() {
        let got = blocks(&[b"event: m\r\ndata: {\"a\":\r\ndata:1}\r\nretry: 1500\r\n\r\n"]);
        assert_eq!(&*got[0].data(), b"{\"a\":\n1}");
        assert_eq!(got[0].retry_ms(), Some(1500));
        let one = blocks(&[b"data: x\n\n"]);
        assert!(matches!(one[0].data(), std::borrow::Cow::Borrowed(b"x")));
        assert_eq!(one[0].retry_ms(), None);
    }

    #[test]
    fn leading_blank_lines_stay_with_the_next_block() {
        let got = blocks(&[b"\n\ndata: x\n\n"]);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].raw()[..], b"\n\ndata: x\n\n");
    }

    /// A client strips a byte order mark only at the very start of the stream: written after
    /// the proxy's `id:` line it would become part of the next field's name, and the client
    /// would drop that line (here, the event's data).
    #[test]
    fn a_leading_byte_order_mark_stays_first_when_the_id_is_rewritten() {
        for input in [
            &b"\xEF\xBB\xBFid: 1\ndata: x\n\n"[..],
            b"\xEF\xBB\xBFdata: x\n\n",
        ] {
            let got = blocks(&[input, b"data: \xEF\xBB\xBFy\n\n"]);
            let mut out = BytesMut::new();
            for block in &got {
                block.write_with_id("p", &mut out);
            }
            assert_eq!(
                &out[..],
                &b"\xEF\xBB\xBFid: p\ndata: x\n\nid: p\ndata: \xEF\xBB\xBFy\n\n"[..],
                "{input:?}"
            );
        }
    }

    #[test]
    fn the_data_of_a_first_event_after_a_byte_order_mark_is_read_whole() {
        let got = blocks(&[b"\xEF\xBB\xBFdata: a\ndata: b\nretry: 7\n\n"]);
        assert_eq!(&*got[0].data(), b"a\nb");
        assert_eq!(got[0].retry_ms(), Some(7));
    }

    #[test]
    fn leading_byte_order_mark_is_not_part_of_the_first_field_name() {
        let got = blocks(&[b"\xEF\xBB", b"\xBFid: 1\ndata: x\n\n"]);
        assert_eq!(got[0].id(), Some("1"));
    }

    /// Feeds `block` to `parser` in `chunk`-byte pieces; returns the blocks it yields.
    fn feed(parser: &mut SseParser, block: &[u8], chunk: usize) -> Vec<SseBlock> {
        let mut out = Vec::new();
        for piece in block.chunks(chunk) {
            parser.push(piece);
            while let Some(b) = parser.next_block().unwrap() {
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn a_long_line_fed_in_small_chunks_is_scanned_once() {
        // One 1 MiB comment line, then an event, arriving 1 KiB at a time: each byte is looked
        // at a bounded number of times, however the line is cut (no rescan from its start).
        let mut input = vec![b':'];
        input.resize(1 << 20, b'x');
        input.extend_from_slice(b"\n\ndata: after\n\n");
        let mut p = SseParser::new(2 << 20);
        let got = feed(&mut p, &input, 1024);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].raw().len(), (1 << 20) + 2);
        assert_eq!(&*got[1].data(), b"after");
        assert!(
            p.scanned <= 2 * input.len(),
            "scanned {} bytes to parse {} (quadratic rescanning)",
            p.scanned,
            input.len()
        );
    }

    #[test]
    fn oversized_block_is_an_error_not_unbounded_memory() {
        let mut p = SseParser::new(16);
        p.push(b"data: 0123456789abcdef0123");
        assert!(matches!(
            p.next_block(),
            Err(SseError::EventTooLarge { limit: 16 })
        ));
    }
}
