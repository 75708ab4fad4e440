import Foundation
import MailModel
import RelayPolicy

/// A decision per recipient, rendered for people (text) or programs (JSON).
public struct Explanation: Sendable {
    public let session: SessionFacts
    public let sender: ReversePath
    public let results: [(recipient: ForwardPath, decision: Decision)]

    public init(engine: RelayEngine, session: SessionFacts, sender: ReversePath, recipients: [ForwardPath]) {
        self.session = session
        self.sender = sender
        results = recipients.map { r in (r, engine.decide(RelayQuery(session: session, sender: sender, recipient: r), trace: true)) }
    }

    static func verdictText(_ v: Verdict) -> String {
        switch v {
        case .relay: return "relay (250 2.1.5 Recipient OK)"
        case .refuse(let r), .defer_(let r): return "\(v) (\(r))"
        }
    }

    public var text: String {
        var out = "client \(session.client) listener \(session.listener)"
        if let h = session.heloName { out += " helo \(h)" }
        out += session.tls ? " tls" : ""
        if let u = session.authenticatedUser { out += " auth \(u)" }
        if let c = session.certificate { out += " cert sha256:\(c.spkiSHA256)" }
        out += " from \(sender)\n"
        for (rcpt, d) in results {
            out += "\n\(rcpt): \(Self.verdictText(d.verdict))\n"
            for step in d.trace {
                if let why = step.failure {
                    out += "  no     \(step.rule.name)  \(step.rule.text)\n           \(why)\n"
                } else {
                    out += "  match  \(step.rule.name)  \(step.rule.text)\n"
                }
            }
            if case .builtin(let name) = d.source { out += "  builtin \(name): \(d.reason)\n" }
        }
        return out
    }

    struct JSONStep: Encodable { let location: String; let rule: String; let matched: Bool; let why: String? }
    struct JSONResult: Encodable {
        let recipient: String
        let verdict: String
        let code: Int
        let status: String?
        let reply: String
        let rule: String
        let ruleText: String?
        let reason: String
        let trace: [JSONStep]
    }
    struct JSONSession: Encodable {
        let client: String; let listener: String; let helo: String?; let tls: Bool; let auth: String?; let certSPKI: String?
        let sender: String
    }
    struct JSONDocument: Encodable { let session: JSONSession; let recipients: [JSONResult] }

    public var json: String {
        let doc = JSONDocument(
            session: JSONSession(client: "\(session.client)", listener: session.listener, helo: session.heloName, tls: session.tls,
                                 auth: session.authenticatedUser, certSPKI: session.certificate.map { "sha256:\($0.spkiSHA256)" },
                                 sender: "\(sender)"),
            recipients: results.map { (rcpt, d) in
                let reply = d.verdict.reply
                var ruleText: String?
                if case .rule(let r) = d.source { ruleText = r.text }
                return JSONResult(recipient: "\(rcpt)", verdict: "\(d.verdict)", code: reply?.code ?? 250,
                                  status: reply?.status?.description ?? "2.1.5",
                                  reply: reply?.lines.joined(separator: " ") ?? "Recipient OK",
                                  rule: d.ruleName, ruleText: ruleText, reason: d.reason,
                                  trace: d.trace.map { JSONStep(location: $0.rule.name, rule: $0.rule.text, matched: $0.failure == nil, why: $0.failure) })
            })
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? e.encode(doc)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// Runs case files against an engine: every failure with its explanation.
public struct CaseRunner {
    public struct Failure: Sendable { public let testCase: PolicyCase; public let message: String; public let explanation: String }

    public static func run(_ cases: [PolicyCase], engine: RelayEngine) -> (passed: Int, failures: [Failure]) {
        var passed = 0
        var failures: [Failure] = []
        for c in cases {
            let x = Explanation(engine: engine, session: c.session, sender: c.sender, recipients: c.recipients)
            var problems: [String] = []
            for (rcpt, d) in x.results {
                if "\(d.verdict)" != c.expected { problems.append("\(rcpt): expected \(c.expected), got \(d.verdict)") }
                if let code = c.expectedCode, (d.verdict.reply?.code ?? 250) != code {
                    problems.append("\(rcpt): expected code \(code), got \(d.verdict.reply?.code ?? 250)")
                }
                if let line = c.expectedRule {
                    if case .rule(let r) = d.source, r.location.line == line {} else {
                        problems.append("\(rcpt): expected rule at line \(line), got \(d.ruleName)")
                    }
                }
            }
            if problems.isEmpty { passed += 1 } else {
                failures.append(Failure(testCase: c, message: problems.joined(separator: "; "), explanation: x.text))
            }
        }
        return (passed, failures)
    }
}
