//! The `lastEventId` a browser's `EventSource` keeps, tracked from the raw bytes of a
//! stream by the WHATWG rules: an `id:` field sets the last event ID *buffer*, and every
//! blank line (a dispatch, even of an event with no data) makes the buffer the stream's
//! last event ID. So an `id:`-only block moves the cursor without dispatching an event —
//! which event parsers that only report dispatched events (eventsource-stream) cannot show.

/// The last event ID of one stream, fed with its bytes as they arrive.
#[derive(Debug, Default, Clone)]
pub struct LastEventId {
    line: Vec<u8>,
    after_cr: bool,
    buffer: Option<String>,
    committed: Option<String>,
}

impl LastEventId {
    /// Starts from the id a reconnect sent (`None`: none).
    pub fn starting_at(id: Option<String>) -> LastEventId {
        LastEventId { buffer: id.clone(), committed: id, ..LastEventId::default() }
    }

    /// Feeds a chunk of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => self.end_line(),
                b'\r' => {
                    self.end_line();
                    self.after_cr = true;
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
    }

    /// The id a reconnect sends as `Last-Event-ID` (`None` when empty or never set).
    pub fn get(&self) -> Option<String> {
        self.committed.clone().filter(|id| !id.is_empty())
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.committed.clone_from(&self.buffer);
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"id" && !value.contains(&0) {
            self.buffer = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_only_block_moves_the_cursor_without_an_event() {
        let mut id = LastEventId::default();
        id.feed(b"retry: 250\n\n: hello\n\nid: 5-0~ab\n");
        assert_eq!(id.get(), None, "not before the blank line");
        id.feed(b"\n");
        assert_eq!(id.get().as_deref(), Some("5-0~ab"));
        id.feed(b"data: x\r\n\r\n");
        assert_eq!(id.get().as_deref(), Some("5-0~ab"), "the buffer persists across events");
        id.feed(b"id:6-0~ab\rdata: y\r\r");
        assert_eq!(id.get().as_deref(), Some("6-0~ab"));
        id.feed(b"id\n\n");
        assert_eq!(id.get(), None, "an empty id clears it");
    }
}
