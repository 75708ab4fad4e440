/// SMTPProtocol: RFC 5321 as pure values and state machines, with no sockets, files or clocks.
///
/// - `CommandParser` turns one command line (bytes) into a typed `Command` or a typed syntax error.
/// - `Reply` and `EnhancedStatus` are the only way to say anything to a client.
/// - `ServerSession` takes bytes and events and returns `SessionAction`s; the driver (Gateway) does
///   the I/O, asks the policy, writes the queue, and feeds the answers back.
/// - `DataDecoder` undoes dot-stuffing and enforces CRLF rules so that only CRLF.CRLF ends DATA.
///
/// Everything here must be total over hostile input: a malformed byte sequence yields a reply, never a
/// trap, and every buffer has a bound that the caller sets.
public enum SMTPProtocol {}
