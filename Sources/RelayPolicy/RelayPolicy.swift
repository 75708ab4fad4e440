/// RelayPolicy: who may relay, as pure data and a pure engine.
///
/// `RelayEngine.decide(_:)` takes the facts of a session and one recipient and returns a `Decision`:
/// the verdict, the rule that matched (with its location), and, when asked, a trace of every rule
/// tried and why it did not match. The same code answers RCPT in the server, `relaygate explain` and
/// `relaygate test`. No I/O, no clocks; lists are prepared at load time for fast lookups.
public enum RelayPolicy {}
