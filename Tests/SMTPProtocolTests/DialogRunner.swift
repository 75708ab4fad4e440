import Foundation
import MailModel
@testable import SMTPProtocol

/// Runs a dialog script (`Dialogs/*.dialog`) against `ServerSession`, with no sockets.
///
/// Script lines:
///   `C: text`   the client sends `text` + CRLF; `\r`, `\n`, `\t`, `\0`, `\xHH`, `\\` are escapes
///   `C~ text`   the client sends `text` without a CRLF added
///   `S: 250 2.1.0 Sender OK`  the next reply, exactly; a trailing `*` matches any rest
///   `S: <close>` the session closes here
///   `Q: text`   the last enqueued message body is exactly `text` (escapes as above)
///   `!set key value`  session settings: maxMessageSize, maxRecipients, maxErrors, maxReceivedHeaders,
///                     normalizeBareLF, commandLineLimit
///                     implicitTLS, authMechanisms (PLAIN,LOGIN), authWithoutTLS, senderBinding
///   `!enqueue noSpace|failed|ok`  what the next enqueue returns
/// The stand-in authenticator: alice/secret succeeds and owns alice@example.org and @example.net;
/// user `down` is unavailable, user `locked` is throttled, anything else is rejected.
/// Recipients at `refused.test` are refused by the stand-in policy; all others are accepted.
struct DialogScript {
    enum Step { case send([UInt8]), expect(String), expectClose, expectBody([UInt8]), enqueueResult(String) }
    var settings = SessionSettings(hostname: "mx.test")
    var steps: [Step] = []
    let name: String

    init(name: String, text: String) throws {
        self.name = name
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("C: ") { steps.append(.send(Self.unescape(String(line.dropFirst(3))) + [13, 10])) }
            else if line.hasPrefix("C~ ") { steps.append(.send(Self.unescape(String(line.dropFirst(3))))) }
            else if line == "S: <close>" { steps.append(.expectClose) }
            else if line.hasPrefix("S: ") { steps.append(.expect(String(line.dropFirst(3)))) }
            else if line.hasPrefix("Q: ") { steps.append(.expectBody(Self.unescape(String(line.dropFirst(3))))) }
            else if line.hasPrefix("!enqueue ") { steps.append(.enqueueResult(String(line.dropFirst(9)))) }
            else if line.hasPrefix("!set ") {
                let parts = line.split(separator: " ")
                guard parts.count == 3 else { throw ScriptError(line: n + 1, text: line) }
                let v = String(parts[2])
                switch parts[1] {
                case "maxMessageSize": settings.maxMessageSize = Int(v)!
                case "maxRecipients": settings.maxRecipients = Int(v)!
                case "maxErrors": settings.maxErrors = Int(v)!
                case "maxReceivedHeaders": settings.maxReceivedHeaders = Int(v)!
                case "commandLineLimit": settings.commandLineLimit = Int(v)!
                case "normalizeBareLF": settings.normalizeBareLF = v == "true"
                case "implicitTLS": settings.implicitTLS = v == "true"
                case "authMechanisms": settings.authMechanisms = v.split(separator: ",").map { SASLMechanism(rawValue: String($0))! }
                case "authWithoutTLS": settings.authWithoutTLS = v == "true"
                case "senderBinding": settings.senderBinding = v == "true"
                default: throw ScriptError(line: n + 1, text: line)
                }
            } else {
                throw ScriptError(line: n + 1, text: line)
            }
        }
    }

    struct ScriptError: Error { let line: Int; let text: String }

    static func unescape(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 1 < b.count {
                switch b[i + 1] {
                case UInt8(ascii: "r"): out.append(13); i += 2; continue
                case UInt8(ascii: "n"): out.append(10); i += 2; continue
                case UInt8(ascii: "t"): out.append(9); i += 2; continue
                case UInt8(ascii: "0"): out.append(0); i += 2; continue
                case UInt8(ascii: "\\"): out.append(92); i += 2; continue
                case UInt8(ascii: "x"):
                    if i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 2)...(i + 3)], as: UTF8.self), radix: 16) {
                        out.append(v); i += 4; continue
                    }
                default: break
                }
            }
            out.append(b[i]); i += 1
        }
        return out
    }

    enum Feeding: CaseIterable { case byteByByte, lineByLine, allAtOnce }

    /// What happened: replies (as `code status text`, lines joined by " / "), `<close>`, and `Q:` bodies.
    struct Transcript: Equatable { var events: [String] = [] }

    /// Runs the script's sends in the given feeding and returns what the session did.
    func run(_ feeding: Feeding) -> (events: [String], bodies: [[UInt8]]) {
        var session = ServerSession(settings: settings)
        var events: [String] = []
        var bodies: [[UInt8]] = []
        var enqueueResults: [String] = steps.compactMap { if case .enqueueResult(let r) = $0 { return r } else { return nil } }
        var counter = 0

        func drain(_ actions: [SessionAction]) {
            var pending = actions
            while !pending.isEmpty {
                let a = pending.removeFirst()
                switch a {
                case .reply(let r): events.append(r.description)
                case .refuse(let r): events.append(r.reply.description)
                case .log: break
                case .startTLS: events.append("<starttls>")
                case .authenticate(let c):
                    let result: AuthenticationResult
                    switch (c.user, c.password, c.authorizationID) {
                    case ("alice", "secret", ""), ("alice", "secret", "alice"):
                        result = .success(user: "alice", senders: SenderOwnership(["alice@example.org", "@example.net"]))
                    case ("down", _, _): result = .unavailable
                    case ("locked", _, _): result = .throttled
                    default: result = .rejected
                    }
                    pending = session.authenticationFinished(result) + pending
                case .close: events.append("<close>")
                case .decideRecipient(let req):
                    let domain = req.recipient.path.mailbox.map { "\($0.domain)" } ?? ""
                    let verdict: RecipientVerdict = domain == "refused.test"
                        ? .refuse(.relayDenied, rule: "test", reason: "test") : .accept(rule: "test")
                    pending = session.recipientDecided(verdict) + pending
                case .enqueue(let m):
                    bodies.append(m.body)
                    counter += 1
                    let result: EnqueueResult
                    switch enqueueResults.isEmpty ? "ok" : enqueueResults.removeFirst() {
                    case "noSpace": result = .noSpace(reason: "test")
                    case "failed": result = .failed(reason: "test")
                    default: result = .queued(QueueID(micros: UInt64(counter), random: 0))
                    }
                    pending = session.enqueueCompleted(result) + pending
                }
            }
        }

        drain(session.start())
        let input: [[UInt8]] = steps.compactMap { if case .send(let b) = $0 { return b } else { return nil } }
        switch feeding {
        case .allAtOnce:
            drain(session.receive(input.flatMap { $0 }[...]))
        case .lineByLine:
            for chunk in input { drain(session.receive(chunk[...])) }
        case .byteByByte:
            for chunk in input { for b in chunk { drain(session.receive([b][...])) } }
        }
        return (events, bodies)
    }

    var expectedEvents: [String] {
        steps.compactMap {
            switch $0 {
            case .expect(let s): return s
            case .expectClose: return "<close>"
            default: return nil
            }
        }
    }

    var expectedBodies: [[UInt8]] { steps.compactMap { if case .expectBody(let b) = $0 { return b } else { return nil } } }

    static func matches(_ pattern: String, _ actual: String) -> Bool {
        pattern.hasSuffix("*") ? actual.hasPrefix(String(pattern.dropLast())) : pattern == actual
    }
}
