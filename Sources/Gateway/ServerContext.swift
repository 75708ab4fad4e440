import Config
import MailModel
import Queue
import RelayPolicy
import SMTPProtocol
import Transport

/// Everything a session needs from the server, fixed for the session's lifetime (a reload makes a new
/// context for new sessions; sessions in flight keep theirs).
public final class ServerContext: Sendable {
    public let hostname: String
    public let configuration: Configuration
    /// The relay rules' engine: pure and fast, so it runs on the loop.
    public let engine: RelayEngine
    public let spool: SpoolDirectory
    public let writers: BlockingPool
    public let log: MailLog

    public init(hostname: String, configuration: Configuration, engine: RelayEngine, spool: SpoolDirectory,
                writers: BlockingPool, log: MailLog) {
        self.hostname = hostname; self.configuration = configuration; self.engine = engine
        self.spool = spool; self.writers = writers; self.log = log
    }

    func sessionSettings(for client: IPAddress) -> SessionSettings {
        let l = configuration.limits
        return SessionSettings(
            hostname: hostname, maxMessageSize: l.messageSize, maxRecipients: l.recipients, maxErrors: l.errors,
            commandLineLimit: l.commandLine, textLineLimit: l.textLine, maxReceivedHeaders: l.receivedHeaders,
            normalizeBareLF: configuration.smtp.normalizeBareLF.contains { $0.contains(client) })
    }
}
