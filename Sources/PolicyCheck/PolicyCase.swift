import MailModel
import PolicyLanguage
import RelayPolicy
import SMTPProtocol

/// One policy test case: a session's facts, a sender, recipients, and the verdict expected for each.
public struct PolicyCase: Sendable {
    public var name: String
    public var location: SourceLocation
    public var session: SessionFacts
    public var sender: ReversePath
    public var recipients: [ForwardPath]
    public var expected: String          // relay | refuse | defer
    public var expectedCode: Int?
    public var expectedRule: Int?        // the matching rule's line, when given
}

/// Reads case files, written in the configuration language:
///
///     case client 192.0.2.10 rcpt bob@example.net expect relay
///     case "roaming user" {
///         client 198.51.100.7
///         listener submission
///         tls
///         auth alice
///         rcpt a@example.net b@example.org
///         expect relay
///     }
///
/// Keys: client ADDR, listener NAME, helo NAME, tls, auth USER, cert-spki sha256:HEX, cert-subject DN,
/// cert-san NAME, cert-ca NAME, from ADDR (or <>), rcpt ADDR..., expect relay|refuse|defer [CODE] [rule LINE].
public struct CaseFileReader {
    public private(set) var diagnostics: [Diagnostic] = []
    /// The listener a case is on unless it says `listener NAME`.
    let defaultListener: String
    public init(defaultListener: String = "default") { self.defaultListener = defaultListener }

    static let keys = ["client", "listener", "helo", "tls", "auth", "cert-spki", "cert-subject", "cert-san", "cert-ca",
                       "from", "rcpt", "expect"]

    public mutating func read(path: String, reader: any SourceReader) -> [PolicyCase] {
        var parser = Parser(reader: reader)
        let directives = parser.parseFile(path)
        diagnostics += parser.diagnostics
        var cases: [PolicyCase] = []
        for d in directives {
            guard d.name == "case" else {
                diagnostics.append(Diagnostic(d.location, "unknown statement '\(d.name)' in a case file; cases begin with 'case'"))
                continue
            }
            var words: [Argument]
            var name: String
            if let block = d.block {
                name = d.arguments.first?.text ?? "case at line \(d.location.line)"
                words = []
                for e in block {
                    words.append(Argument(directiveName: e))
                    words += e.arguments
                }
            } else {
                name = "case at line \(d.location.line)"
                words = d.arguments
            }
            if let c = parseCase(name: name, at: d.location, words[...]) { cases.append(c) }
        }
        return cases
    }

    mutating func parseCase(name: String, at: SourceLocation, _ words: ArraySlice<Argument>) -> PolicyCase? {
        var w = words
        var client: IPAddress?
        var listener = defaultListener
        var helo: String?
        var tls = false
        var auth: String?
        var spki: String?, subject: String?, sans: [String] = [], cas: Set<String> = []
        var sender = ReversePath.null
        var rcpts: [ForwardPath] = []
        var expected: String?
        var code: Int?
        var ruleLine: Int?
        var ok = true

        func value(_ k: Argument) -> Argument? {
            guard let v = w.first else {
                diagnostics.append(Diagnostic(k.location, "'\(k.text)' needs a value"))
                ok = false
                return nil
            }
            w = w.dropFirst()
            return v
        }

        while let k = w.first {
            w = w.dropFirst()
            switch k.text {
            case "client":
                guard let v = value(k) else { break }
                if let a = IPAddress(v.text) { client = a } else {
                    diagnostics.append(Diagnostic(v.location, "'\(v.text)' is not an IP address")); ok = false
                }
            case "listener": listener = value(k)?.text ?? listener
            case "helo": helo = value(k)?.text
            case "tls": tls = true
            case "auth": auth = value(k)?.text
            case "cert-spki":
                guard let v = value(k) else { break }
                if let hex = FactsParser.spki(v.text) { spki = hex } else {
                    diagnostics.append(Diagnostic(v.location, "'\(v.text)' is not sha256: and 64 hex digits")); ok = false
                }
            case "cert-subject": subject = value(k)?.text
            case "cert-san": if let v = value(k) { sans.append(v.text) }
            case "cert-ca": if let v = value(k) { cas.insert(v.text) }
            case "from":
                guard let v = value(k) else { break }
                if let s = FactsParser.sender(v.text) { sender = s } else {
                    diagnostics.append(Diagnostic(v.location, "'\(v.text)' is not a sender address (or <>)")); ok = false
                }
            case "rcpt":
                var any = false
                while let v = w.first, !Self.keys.contains(v.text) {
                    w = w.dropFirst()
                    any = true
                    if let r = FactsParser.recipient(v.text) { rcpts.append(r) } else {
                        diagnostics.append(Diagnostic(v.location, "'\(v.text)' is not a recipient address")); ok = false
                    }
                }
                if !any { diagnostics.append(Diagnostic(k.location, "'rcpt' needs one or more addresses")); ok = false }
            case "expect":
                guard let v = value(k) else { break }
                guard ["relay", "refuse", "defer"].contains(v.text) else {
                    diagnostics.append(Diagnostic(v.location, "expect relay, refuse or defer, not '\(v.text)'")); ok = false
                    break
                }
                expected = v.text
                if let c = w.first, let n = Int(c.text), c.text.count == 3 { code = n; w = w.dropFirst() }
                if w.first?.text == "rule" {
                    w = w.dropFirst()
                    if let l = w.first, let n = Int(l.text) { ruleLine = n; w = w.dropFirst() } else {
                        diagnostics.append(Diagnostic(k.location, "'rule' needs a line number")); ok = false
                    }
                }
            default:
                var m = "unknown key '\(k.text)'"
                if let h = Self.nearest(k.text) { m += "; did you mean '\(h)'?" }
                diagnostics.append(Diagnostic(k.location, m))
                ok = false
            }
        }
        guard let client else {
            diagnostics.append(Diagnostic(at, "a case needs 'client ADDR'"))
            return nil
        }
        guard !rcpts.isEmpty else { diagnostics.append(Diagnostic(at, "a case needs 'rcpt ADDR'")); return nil }
        guard let expected else { diagnostics.append(Diagnostic(at, "a case needs 'expect relay|refuse|defer'")); return nil }
        guard ok else { return nil }
        let cert = spki.map { CertificateFacts(spkiSHA256: $0, subject: subject, subjectAltNames: sans, verifiedBy: cas) }
        return PolicyCase(name: name, location: at,
                          session: SessionFacts(listener: listener, client: client, heloName: helo, tls: tls,
                                                certificate: cert, authenticatedUser: auth),
                          sender: sender, recipients: rcpts, expected: expected, expectedCode: code, expectedRule: ruleLine)
    }

    static func nearest(_ word: String) -> String? {
        keys.first { k in
            let a = Array(word), b = Array(k)
            return abs(a.count - b.count) <= 2 && Set(a).symmetricDifference(Set(b)).count <= 2
        }
    }
}

extension Argument {
    /// A block entry's name read as a word (case files write `client 192.0.2.1` one a line).
    init(directiveName d: Directive) {
        self.init(text: d.name, quoted: false, location: d.location)
    }
}

/// Addresses and facts as an administrator types them on a command line or in a case file.
public enum FactsParser {
    public static func spki(_ text: String) -> String? { CertificateFacts.parsePin(text) }

    static func stripBrackets(_ text: String) -> String {
        text.hasPrefix("<") && text.hasSuffix(">") && text.count >= 2 ? String(text.dropFirst().dropLast()) : text
    }

    /// `a@example.org`, `<a@example.org>` or `<>`.
    public static func sender(_ text: String) -> ReversePath? {
        let inner = stripBrackets(text)
        if inner.isEmpty { return .null }
        return AddressParser.parseMailbox(Array(inner.utf8)[...]).map { .mailbox($0) }
    }

    /// `a@example.org`, `Postmaster`, or any RFC 5321 forward-path in brackets (source routes too).
    public static func recipient(_ text: String) -> ForwardPath? {
        if text.hasPrefix("<") {
            let (path, rest) = AddressParser.parsePath(Array(text.utf8)[...], allowNull: false, allowPostmaster: true)
            guard rest.isEmpty, let path else { return nil }
            switch path {
            case .postmaster: return .postmaster
            case .mailbox(let m): return .mailbox(m)
            case .null: return nil
            }
        }
        if text.lowercased() == "postmaster" { return .postmaster }
        return AddressParser.parseMailbox(Array(text.utf8)[...]).map { .mailbox($0) }
    }
}
