import MailModel
import PolicyLanguage
import RelayPolicy

/// The relay part of a configuration: named lists, the ordered rules and the built-in checks' settings.
public struct RelayRules: Sendable {
    public var rules: [Rule] = []
    /// Names of this host besides `hostname` (`local-names { ... }`): recipients there are refused.
    public var localNames = DomainSet()
    public var allowUntrustedRouting = false
    public var location: SourceLocation?
    public init() {}
}

/// Named lists, by kind. A rule refers to one as `<name>`.
public struct NamedLists: Sendable {
    public var networks: [String: (NetworkSet, [IPNetwork])] = [:]
    public var domains: [String: DomainSet] = [:]
    public var users: [String: Set<String>] = [:]
    public var pins: [String: Set<String>] = [:]
    public var authorities: [String: String] = [:]   // CA name -> PEM file path
    public var locations: [String: (kind: String, at: SourceLocation)] = [:]
    public init() {}
}
