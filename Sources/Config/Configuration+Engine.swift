import MailModel
import RelayPolicy

extension Configuration {
    /// The engine the server, `explain` and `test` all use, so that they cannot disagree.
    /// `localAddresses` are this host's interface addresses; listener addresses are added here.
    public func relayEngine(hostname: String, localAddresses: Set<IPAddress>) -> RelayEngine? {
        guard let relay else { return nil }
        var names = relay.localNames
        if let h = DomainName(hostname) { names.insert(h.canonical, subdomains: false) }
        var addresses = Set(localAddresses.map(\.unmapped))
        for l in listeners { for a in l.addresses where a.host != .v4(0) && a.host != .v6(0, 0) { addresses.insert(a.host.unmapped) } }
        return RelayEngine(rules: relay.rules, localNames: names, localAddresses: addresses,
                           allowUntrustedRouting: relay.allowUntrustedRouting)
    }
}
