/// MailModel: the values every other module speaks in: addresses, domains, IP networks, envelopes,
/// queue and session identifiers. Values only: no I/O, no clocks, no sockets. Anything here must be
/// safe to build from hostile input (parsers return nil or an error, never trap).
public enum MailModel {}
