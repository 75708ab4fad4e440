import MailModel
import SMTPProtocol

/// The outcome of one decision.
public struct Decision: Sendable, Hashable {
    public enum Source: Sendable, Hashable {
        /// A rule of the list matched.
        case rule(Rule)
        /// A check that comes before the rules: no mailboxes here, untrusted routing.
        case builtin(String)
    }

    public struct Step: Sendable, Hashable {
        public let rule: Rule
        /// nil when the rule matched; otherwise the first condition that failed, explained.
        public let failure: String?
    }

    public let verdict: Verdict
    public let source: Source
    /// Why: for a built-in, its explanation; for a rule, what it granted.
    public let reason: String
    /// Every rule tried, in order (empty unless a trace was asked for).
    public let trace: [Step]

    /// Rule name for log lines: `file:line`, or `builtin:NAME`.
    public var ruleName: String {
        switch source {
        case .rule(let r): return r.name
        case .builtin(let n): return "builtin:\(n)"
        }
    }
}

/// First match wins over an ordered rule list whose last rule is an unconditional refusal (the
/// loader guarantees it). Before the rules: a recipient at this host's own names or address
/// literals is refused (there are no mailboxes here). After a `relay` match: a rule that does not
/// trust the client (for example `relay to <backup>`) does not carry a local part a next hop could
/// read as a route (`%`, `!`, a quoted `@`), unless `allowUntrustedRouting`.
public struct RelayEngine: Sendable {
    public let rules: [Rule]
    public let localNames: DomainSet
    public let localAddresses: Set<IPAddress>
    public let allowUntrustedRouting: Bool

    public init(rules: [Rule], localNames: DomainSet = DomainSet(), localAddresses: Set<IPAddress> = [],
                allowUntrustedRouting: Bool = false) {
        self.rules = rules; self.localNames = localNames; self.localAddresses = localAddresses
        self.allowUntrustedRouting = allowUntrustedRouting
    }

    public static let noMailboxes = Reply.noLocalMailboxes

    public func decide(_ q: RelayQuery, trace: Bool = false) -> Decision {
        guard let mailbox = q.recipient.mailbox else {
            return Decision(verdict: .refuse(Self.noMailboxes), source: .builtin("no-mailboxes"),
                            reason: "bare <Postmaster>: this host has no mailboxes", trace: [])
        }
        switch mailbox.domain {
        case .name(let d) where localNames.contains(d):
            return Decision(verdict: .refuse(Self.noMailboxes), source: .builtin("no-mailboxes"),
                            reason: "\(d) is a name of this host, which has no mailboxes", trace: [])
        case .ipv4(let a), .ipv6(let a):
            if localAddresses.contains(a.unmapped) || localAddresses.contains(a) {
                return Decision(verdict: .refuse(Self.noMailboxes), source: .builtin("no-mailboxes"),
                                reason: "[\(a)] is an address of this host, which has no mailboxes", trace: [])
            }
        default:
            break
        }

        var steps: [Decision.Step] = []
        for rule in rules {
            if let failed = rule.conditions.first(where: { !$0.holds(q) }) {
                if trace { steps.append(.init(rule: rule, failure: failed.whyNot(q))) }
                continue
            }
            if trace { steps.append(.init(rule: rule, failure: nil)) }
            if case .relay = rule.verdict, !rule.trustsClient, !allowUntrustedRouting, Self.looksLikeRoute(mailbox.localPart) {
                return Decision(verdict: .refuse(.relayDenied), source: .builtin("untrusted-routing"),
                                reason: "rule \(rule.name) matched, but it does not trust the client and the local part "
                                    + "\(mailbox.localPart) holds a route (% ! or quoted @)", trace: steps)
            }
            return Decision(verdict: rule.verdict, source: .rule(rule), reason: "matched \(rule.text)", trace: steps)
        }
        // Unreachable with a loaded policy (it ends in an unconditional refusal); safe anyway.
        return Decision(verdict: .refuse(.relayDenied), source: .builtin("no-rule"), reason: "no rule matched", trace: steps)
    }

    /// `%`, `!`, or an `@` inside a quoted local part: forms a next hop might route on.
    static func looksLikeRoute(_ localPart: String) -> Bool {
        if localPart.contains("%") || localPart.contains("!") { return true }
        return localPart.hasPrefix("\"") && localPart.contains("@")
    }
}
