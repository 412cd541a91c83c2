// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "engage-sync",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "engage-sync", targets: ["engage-sync"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // libpq, the PostgreSQL client library, from the system (apt: libpq-dev).
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // A thin, safe Swift binding of libpq. The only place that calls PQ* functions.
        .target(
            name: "PostgresClient",
            dependencies: [
                "CLibPQ",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Pure domain: definitions, keys, Segment messages, the Vero mapper, retry policy. No I/O.
        .target(name: "EngageCore"),
        // Everything that speaks SQL: migrations, the definition compiler, repositories, sync SQL.
        .target(
            name: "EngageStore",
            dependencies: ["PostgresClient", "EngageCore"]
        ),
        // HTTP transport to Vero: AsyncHTTPClient, rate limiting, error classification.
        .target(
            name: "VeroClient",
            dependencies: [
                "EngageCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // A local Vero-compatible API server for tests, benchmarks and the quickstart.
        .target(
            name: "VeroSandbox",
            dependencies: [
                "EngageCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Orchestration: define, sync runs, delivery, resync.
        .target(
            name: "EngageSync",
            dependencies: [
                "EngageCore", "EngageStore", "VeroClient", "PostgresClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The status page: HTML and an SVG chart rendered from the store's reads. No I/O.
        .target(name: "StatusPage", dependencies: ["EngageStore"]),
        // `serve`: the scheduler, delivery workers and the HTTP endpoints under one service group.
        .target(
            name: "EngageServer",
            dependencies: [
                "EngageCore", "EngageStore", "EngageSync", "PostgresClient", "StatusPage",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The command line: argument parsing only.
        .executableTarget(
            name: "engage-sync",
            dependencies: [
                "EngageSync", "EngageStore", "EngageCore", "EngageServer", "VeroSandbox", "VeroClient", "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            plugins: ["BuildCommit"]
        ),
        // `engage-sync --version` names the commit it was built from.
        .plugin(name: "BuildCommit", capability: .buildTool()),
        // Test helpers: a fresh database per test, the sandbox fixture, running the built
        // executable, one HTTP helper and one polling helper.
        .target(
            name: "TestSupport",
            dependencies: [
                "PostgresClient", "EngageStore", "EngageCore", "EngageSync", "VeroSandbox",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tests/TestSupport"
        ),
        // A test target per module, and one for the binary's contract.
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "TestSupport"]),
        .testTarget(name: "EngageCoreTests", dependencies: ["EngageCore"]),
        .testTarget(name: "EngageStoreTests", dependencies: ["EngageStore", "PostgresClient", "EngageCore", "TestSupport"]),
        .testTarget(
            name: "VeroClientTests",
            dependencies: ["VeroClient", "EngageCore", .product(name: "AsyncHTTPClient", package: "async-http-client")]
        ),
        .testTarget(name: "VeroSandboxTests", dependencies: ["VeroSandbox", "TestSupport"]),
        .testTarget(
            name: "EngageSyncTests",
            dependencies: [
                "EngageSync", "EngageStore", "EngageCore", "VeroSandbox", "PostgresClient", "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(
            name: "EngageServerTests",
            dependencies: [
                "EngageServer", "EngageCore", "PostgresClient", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The executable's contract: commands, exit codes, output, signals, as a user runs them.
        .testTarget(
            name: "CommandLineTests",
            dependencies: [
                "EngageSync", "EngageStore", "EngageCore", "VeroClient", "VeroSandbox", "PostgresClient", "TestSupport", "StatusPage", "EngageServer",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
