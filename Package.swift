// swift-tools-version:6.0
// Relaygate: a relay-control SMTP gateway. Toolchain only; C libraries come from Debian's -dev packages.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "relaygate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "relaygate", targets: ["relaygate"]),
    ],
    targets: [
        // Linux calls Glibc's Swift overlay does not import (epoll, eventfd, accept4, renameat2).
        .target(name: "CShim", path: "Sources/CShim"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .target(name: "TLS", dependencies: ["COpenSSL", "MailModel", "RelayPolicy"], swiftSettings: strict),
        .systemLibrary(name: "CPAM", path: "Sources/CPAM", pkgConfig: "pam", providers: [.apt(["libpam0g-dev"])]),
        .systemLibrary(name: "CLDAP", path: "Sources/CLDAP", pkgConfig: "ldap", providers: [.apt(["libldap-dev"])]),
        .systemLibrary(name: "CUnbound", path: "Sources/CUnbound", pkgConfig: "libunbound",
                       providers: [.apt(["libunbound-dev"])]),
        .target(name: "DNS", dependencies: ["CUnbound", "MailModel"], swiftSettings: strict),
        .target(name: "Delivery", dependencies: ["DNS", "MailModel", "SMTPProtocol", "Queue", "TLS", "Transport"],
                swiftSettings: strict),
        .target(name: "Auth", dependencies: ["CPAM", "CLDAP", "MailModel", "SMTPProtocol"], swiftSettings: strict),
        .target(name: "MailModel", swiftSettings: strict),
        .target(name: "SMTPProtocol", dependencies: ["MailModel"], swiftSettings: strict),
        .target(name: "PolicyLanguage", swiftSettings: strict),
        .target(name: "RelayPolicy", dependencies: ["MailModel", "SMTPProtocol", "PolicyLanguage"], swiftSettings: strict),
        .target(name: "Config", dependencies: ["PolicyLanguage", "MailModel", "RelayPolicy", "SMTPProtocol", "Auth", "Delivery", "DNS", "Queue"],
                swiftSettings: strict),
        .target(name: "PolicyCheck", dependencies: ["RelayPolicy", "Config", "PolicyLanguage", "SMTPProtocol", "MailModel"],
                swiftSettings: strict),
        .target(name: "Queue", dependencies: ["MailModel", "CShim"], swiftSettings: strict),
        .target(name: "Transport", dependencies: ["MailModel", "CShim"], swiftSettings: strict),
        .target(
            name: "Gateway",
            dependencies: ["MailModel", "SMTPProtocol", "Config", "Queue", "Transport", "RelayPolicy", "TLS", "Auth", "Delivery"],
            swiftSettings: strict),
        .executableTarget(
            name: "relaygate",
            dependencies: ["Gateway", "Config", "Queue", "PolicyLanguage", "MailModel", "PolicyCheck", "RelayPolicy", "Transport", "TLS", "Delivery", "DNS"],
            swiftSettings: strict),
        .testTarget(name: "MailModelTests", dependencies: ["MailModel"], swiftSettings: strict),
        .testTarget(name: "SMTPProtocolTests", dependencies: ["SMTPProtocol", "MailModel"],
                    resources: [.copy("Dialogs")], swiftSettings: strict),
        .testTarget(name: "PolicyLanguageTests", dependencies: ["PolicyLanguage", "Config", "SMTPProtocol"],
                    resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "RelayPolicyTests", dependencies: ["RelayPolicy", "Config", "PolicyCheck", "PolicyLanguage", "MailModel"],
                    resources: [.copy("Fixtures")], swiftSettings: strict),
        .testTarget(name: "DeliveryTests", dependencies: ["Delivery", "DNS", "Queue", "SMTPProtocol", "MailModel"],
                    swiftSettings: strict),
        .testTarget(name: "AuthTests", dependencies: ["Auth", "SMTPProtocol", "MailModel"], swiftSettings: strict),
        .testTarget(name: "QueueTests", dependencies: ["Queue", "MailModel"], swiftSettings: strict),
    ]
)
