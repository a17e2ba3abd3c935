//! The sans-IO AT command engine: a queue of commands sent one at a time, each with its own
//! timeout; the response lines of the command in flight collected until its final result; and
//! unsolicited result codes routed out as they come, also when they arrive in the middle of a
//! response. Echo (`ATE1`) is recognised and skipped. A `+CMT:`/`+CDS:` URC takes the line
//! after it as its PDU.
//!
//! The engine never reads a clock: every call that depends on time takes `now`, and
//! [`AtEngine::poll_timeout`] says when it next needs to be woken.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::lines::{Frame, LineSplitter};
use super::result::{is_pdu_urc_header, is_urc_line, parse_pdu_urc, parse_urc, FinalResult, Urc};

/// One command to send.
#[derive(Debug, Clone)]
pub struct Command<T> {
    /// The command text without the trailing `\r` (e.g. `AT+CSQ`).
    pub text: String,
    /// How long the modem may take to give the final result.
    pub timeout: Duration,
    /// Prefixes of information lines that belong to this command even though they look like
    /// URCs (e.g. `+CLCC:` for `AT+CLCC`, `+CREG:` for `AT+CREG?`).
    pub expect: Vec<String>,
    /// Text sent after the `> ` prompt, terminated by Ctrl-Z (SMS).
    pub payload: Option<String>,
    /// The caller's tag, returned with the response.
    pub tag: T,
}

impl<T> Command<T> {
    /// A command with the default timeout (5 s) and no special prefixes.
    pub fn new(text: impl Into<String>, tag: T) -> Self {
        Command {
            text: text.into(),
            timeout: Duration::from_secs(5),
            expect: Vec::new(),
            payload: None,
            tag,
        }
    }

    /// Sets the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Adds a prefix of information lines that belong to this command.
    pub fn expect(mut self, prefix: impl Into<String>) -> Self {
        self.expect.push(prefix.into());
        self
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The modem gave a final result.
    Final(FinalResult),
    /// No final result within the command's timeout.
    Timeout,
    /// Dropped unsent or in flight by [`AtEngine::reset`].
    Cancelled,
}

impl Outcome {
    /// Whether the command ended with `OK` (or `CONNECT`).
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Final(f) if f.is_ok())
    }
}

/// The complete answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<T> {
    /// The command text as sent.
    pub command: String,
    /// The caller's tag.
    pub tag: T,
    /// Information lines, in order, without echo and URCs.
    pub lines: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
}

impl<T> Response<T> {
    /// The first information line starting with `prefix`, with the prefix and spaces removed.
    pub fn value(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::trim))
    }
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtEvent<T> {
    /// A command finished.
    Response(Response<T>),
    /// An unsolicited result code.
    Urc(Urc),
}

struct InFlight<T> {
    cmd: Command<T>,
    deadline: Instant,
    lines: Vec<String>,
    echo_seen: bool,
}

/// The engine. `T` is the caller's tag type for commands.
pub struct AtEngine<T> {
    splitter: LineSplitter,
    queue: VecDeque<Command<T>>,
    in_flight: Option<InFlight<T>>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<AtEvent<T>>,
    frames: Vec<Frame>,
    last_rx: Option<Instant>,
    /// A `+CMT:`/`+CDS:` header whose PDU line is next.
    pdu_header: Option<String>,
}

impl<T> Default for AtEngine<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> AtEngine<T> {
    /// An idle engine.
    pub fn new() -> Self {
        AtEngine {
            splitter: LineSplitter::new(),
            queue: VecDeque::new(),
            in_flight: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            frames: Vec::new(),
            last_rx: None,
            pdu_header: None,
        }
    }

    /// Queues a command; it is sent when the ones before it have finished.
    pub fn enqueue(&mut self, cmd: Command<T>, now: Instant) {
        self.queue.push_back(cmd);
        self.start_next(now);
    }

    /// Commands waiting or in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + usize::from(self.in_flight.is_some())
    }

    /// Whether a command with this text is queued or in flight.
    pub fn has_pending(&self, text: &str) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.cmd.text == text)
            || self.queue.iter().any(|c| c.text == text)
    }

    /// When bytes last came from the modem.
    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
    }

    /// Bytes to write to the port, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<AtEvent<T>> {
        self.events.pop_front()
    }

    /// When [`AtEngine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// Ends the command in flight if its deadline has passed, then sends the next one.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(f) = &self.in_flight {
            if now >= f.deadline {
                self.finish(Outcome::Timeout);
                self.start_next(now);
            }
        }
    }

    /// Drops everything: queued and in-flight commands end as [`Outcome::Cancelled`], partial
    /// input and unsent output are discarded. Used when the port is closed or re-opened.
    pub fn reset(&mut self) {
        self.splitter.reset();
        self.transmit.clear();
        self.pdu_header = None;
        if self.in_flight.is_some() {
            self.finish(Outcome::Cancelled);
        }
        while let Some(cmd) = self.queue.pop_front() {
            self.events.push_back(AtEvent::Response(Response {
                command: cmd.text,
                tag: cmd.tag,
                lines: Vec::new(),
                outcome: Outcome::Cancelled,
            }));
        }
    }

    /// Feeds bytes read from the port.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.last_rx = Some(now);
        let mut frames = std::mem::take(&mut self.frames);
        self.splitter.push(bytes, &mut frames);
        for frame in frames.drain(..) {
            match frame {
                Frame::Prompt => self.on_prompt(),
                Frame::Line(line) => self.on_line(line, now),
            }
        }
        self.frames = frames;
    }

    fn on_prompt(&mut self) {
        if let Some(f) = &mut self.in_flight {
            if let Some(p) = f.cmd.payload.take() {
                let mut bytes = p.into_bytes();
                bytes.push(0x1A);
                self.transmit.push_back(bytes);
            }
        }
    }

    /// An unsolicited line: a URC, or the header of one whose PDU comes next.
    fn urc(&mut self, line: String) {
        if is_pdu_urc_header(&line) {
            self.pdu_header = Some(line);
        } else {
            self.events.push_back(AtEvent::Urc(parse_urc(&line)));
        }
    }

    fn on_line(&mut self, line: String, now: Instant) {
        if let Some(header) = self.pdu_header.take() {
            if FinalResult::parse(&line).is_none() && !is_urc_line(&line) {
                self.events
                    .push_back(AtEvent::Urc(parse_pdu_urc(&header, &line)));
                return;
            }
            // No PDU after the header: keep the header for the log, handle the line as usual.
            self.events.push_back(AtEvent::Urc(Urc::Other(header)));
        }
        let Some(f) = &mut self.in_flight else {
            // Nothing in flight: a stray echo, or unsolicited.
            if !is_echo_like(&line) {
                self.urc(line);
            }
            return;
        };
        if !f.echo_seen && f.lines.is_empty() && line.eq_ignore_ascii_case(f.cmd.text.trim()) {
            f.echo_seen = true;
            return;
        }
        if let Some(result) = FinalResult::parse(&line) {
            self.finish(Outcome::Final(result));
            self.start_next(now);
            return;
        }
        let expected = f.cmd.expect.iter().any(|p| line.starts_with(p.as_str()));
        if !expected && is_urc_line(&line) {
            self.urc(line);
        } else if !expected && is_echo_like(&line) {
            // Echo of an earlier command (e.g. a late echo after ATE0); not an answer.
        } else {
            f.lines.push(line);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(f) = self.in_flight.take() {
            self.events.push_back(AtEvent::Response(Response {
                command: f.cmd.text,
                tag: f.cmd.tag,
                lines: f.lines,
                outcome,
            }));
        }
    }

    fn start_next(&mut self, now: Instant) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(cmd) = self.queue.pop_front() {
            let mut bytes = cmd.text.clone().into_bytes();
            bytes.push(b'\r');
            self.transmit.push_back(bytes);
            self.in_flight = Some(InFlight {
                deadline: now + cmd.timeout,
                cmd,
                lines: Vec::new(),
                echo_seen: false,
            });
        }
    }
}

fn is_echo_like(line: &str) -> bool {
    line.as_bytes()
        .get(..2)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"AT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_sends_one_at_a_time_with_own_timeouts() {
        let t0 = Instant::now();
        let mut e: AtEngine<u8> = AtEngine::new();
        e.enqueue(Command::new("AT", 1).timeout(Duration::from_secs(1)), t0);
        e.enqueue(
            Command::new("AT+CSQ", 2).timeout(Duration::from_secs(3)),
            t0,
        );
        assert_eq!(e.poll_transmit().as_deref(), Some(&b"AT\r"[..]));
        assert_eq!(e.poll_transmit(), None);
        assert_eq!(e.pending(), 2);
        assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_millis(500);
        e.handle_input(b"\r\nOK\r\n", t1);
        assert!(
            matches!(e.poll_event(), Some(AtEvent::Response(r)) if r.tag == 1 && r.outcome.is_ok())
        );
        assert_eq!(e.poll_transmit().as_deref(), Some(&b"AT+CSQ\r"[..]));
        assert_eq!(e.poll_timeout(), Some(t1 + Duration::from_secs(3)));
        e.handle_timeout(t1 + Duration::from_secs(2));
        assert_eq!(e.poll_event(), None);
        e.handle_timeout(t1 + Duration::from_secs(3));
        assert!(
            matches!(e.poll_event(), Some(AtEvent::Response(r)) if r.tag == 2 && r.outcome == Outcome::Timeout)
        );
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn reset_cancels_everything() {
        let t0 = Instant::now();
        let mut e: AtEngine<u8> = AtEngine::new();
        e.enqueue(Command::new("AT", 1), t0);
        e.enqueue(Command::new("AT+CSQ", 2), t0);
        e.handle_input(b"\r\n+CS", t0);
        e.reset();
        let tags: Vec<_> = std::iter::from_fn(|| e.poll_event())
            .map(|ev| match ev {
                AtEvent::Response(r) => (r.tag, r.outcome),
                AtEvent::Urc(u) => panic!("{u:?}"),
            })
            .collect();
        assert_eq!(tags, vec![(1, Outcome::Cancelled), (2, Outcome::Cancelled)]);
        assert_eq!(e.poll_transmit(), None);
        e.handle_input(b"Q: 1,99\r\n", t0);
        assert!(matches!(e.poll_event(), Some(AtEvent::Urc(Urc::Other(_)))));
    }

    #[test]
    fn garbage_from_the_modem_is_not_a_panic() {
        let t0 = Instant::now();
        let mut e: AtEngine<()> = AtEngine::new();
        e.enqueue(Command::new("AT", ()), t0);
        e.poll_transmit();
        e.handle_input(
            b"\xc3\r\n\xff\xfeAT\r\n\x00\x01\r\n+CLIP:\r\n^CEND:\xff\r\n^RSSI:999\r\nOK\r\n",
            t0,
        );
        let mut n = 0;
        while e.poll_event().is_some() {
            n += 1;
        }
        assert!(n >= 2);
        // Without a command in flight too.
        e.handle_input(
            b"\xe2\x82\r\n+CLCC: x\r\n^CONN:\r\n+CREG: ,\r\n+CUSD: 9999999\r\n",
            t0,
        );
        while e.poll_event().is_some() {}
    }

    #[test]
    fn cmt_and_cds_take_the_next_line_as_their_pdu() {
        let t0 = Instant::now();
        let mut e: AtEngine<u8> = AtEngine::new();
        e.handle_input(b"\r\n+CMT: ,24\r\n07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07\r\n", t0);
        assert!(
            matches!(e.poll_event(), Some(AtEvent::Urc(Urc::Cmt { pdu })) if pdu.starts_with("0791"))
        );
        // In the middle of a response, too; the command still gets its lines.
        e.enqueue(Command::new("AT+CSQ", 1).expect("+CSQ:"), t0);
        e.poll_transmit();
        e.handle_input(b"\r\n+CDS: 25\r\n0006\r\n+CSQ: 20,99\r\nOK\r\n", t0);
        assert_eq!(
            e.poll_event(),
            Some(AtEvent::Urc(Urc::Cds { pdu: "0006".into() }))
        );
        assert!(
            matches!(e.poll_event(), Some(AtEvent::Response(r)) if r.lines == vec!["+CSQ: 20,99".to_string()])
        );
        // A header without its PDU does not swallow the final result.
        e.enqueue(Command::new("AT", 2), t0);
        e.poll_transmit();
        e.handle_input(b"\r\n+CMT: ,3\r\nOK\r\n", t0);
        assert!(matches!(e.poll_event(), Some(AtEvent::Urc(Urc::Other(_)))));
        assert!(
            matches!(e.poll_event(), Some(AtEvent::Response(r)) if r.tag == 2 && r.outcome.is_ok())
        );
    }

    #[test]
    fn payload_after_prompt() {
        let t0 = Instant::now();
        let mut e: AtEngine<()> = AtEngine::new();
        let mut c = Command::new("AT+CMGS=1", ());
        c.payload = Some("00".into());
        e.enqueue(c, t0);
        e.poll_transmit();
        e.handle_input(b"\r\n> ", t0);
        assert_eq!(e.poll_transmit().as_deref(), Some(&b"00\x1a"[..]));
    }
}
