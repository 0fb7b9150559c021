//! Standalone Auth0 Management API emulator for the local stack. Not the production binary.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use secret_rotator::emulator::{
    Emulator, EmulatorConfig, RateGroups, demo_clients, fleet_clients, m2m_client,
};

#[derive(Debug, Parser)]
#[command(
    name = "auth0-emulator",
    about = "Stateful Auth0 Management API emulator (tests, local stack)"
)]
struct Args {
    /// Listen address.
    #[arg(long, env = "EMULATOR_LISTEN_ADDR", default_value = "127.0.0.1:4010")]
    listen: SocketAddr,
    /// Tenant domain (token audience https://{domain}/api/v2/).
    #[arg(long, env = "EMULATOR_DOMAIN", default_value = "emulator.auth0.local")]
    domain: String,
    /// Client id of the rotator's own machine-to-machine application.
    #[arg(
        long,
        env = "EMULATOR_SERVICE_CLIENT_ID",
        default_value = "Dm0M2MService0000000000000000001"
    )]
    service_client_id: String,
    /// Its client secret.
    #[arg(long, env = "EMULATOR_SERVICE_CLIENT_SECRET", hide_env_values = true)]
    service_client_secret: String,
    /// Seconds the previous secret stays accepted after a rotation (0-30).
    #[arg(long, default_value_t = 0)]
    propagation_window_secs: u64,
    /// The Management API's token bucket: its size (x-ratelimit-limit) ...
    #[arg(long, env = "EMULATOR_RATE_LIMIT_BURST", default_value_t = 50)]
    rate_limit_burst: u32,
    /// ... and how many requests it refills per second.
    #[arg(long, env = "EMULATOR_RATE_LIMIT_PER_SECOND", default_value_t = 16)]
    rate_limit_per_second: u32,
    /// The plan's bucket layout: `global` (one bucket for everything, the two settings above)
    /// or `essentials` (Essentials and Professional: reading clients 5 burst / 100 a minute,
    /// every other endpoint 10 / 150 a minute).
    #[arg(long, env = "EMULATOR_RATE_GROUPS", default_value = "global", value_parser = ["global", "essentials"])]
    rate_groups: String,
    /// Also seed this many fleet clients (ids Fleet000...; see `fleet_clients`).
    #[arg(long, env = "EMULATOR_FLEET", default_value_t = 0)]
    fleet: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = EmulatorConfig {
        domain: args.domain,
        propagation_window: Duration::from_secs(args.propagation_window_secs.min(30)),
        rate_limit_burst: args.rate_limit_burst.max(1),
        rate_limit_per_second: args.rate_limit_per_second.max(1),
        rate_groups: (args.rate_groups == "essentials").then_some(RateGroups::ESSENTIALS),
        ..EmulatorConfig::default()
    };
    let mut emulator = Emulator::new(config).with_client(m2m_client(
        &args.service_client_id,
        &args.service_client_secret,
        &[
            "read:clients",
            "read:client_keys",
            "update:client_keys",
            // key rotations (Private Key JWT and self-signed mTLS clients)
            "create:client_credentials",
            "read:client_credentials",
            "update:client_credentials",
            "delete:client_credentials",
        ],
    ));
    let mut ids = Vec::new();
    for client in demo_clients() {
        ids.push(
            client.doc["client_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        emulator = emulator.with_client(client);
    }
    for client in fleet_clients(args.fleet) {
        emulator = emulator.with_client(client);
    }
    if args.fleet > 0 {
        ids.push(format!("and {} fleet clients (Fleet000...)", args.fleet));
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "auth0-emulator listening on http://{}; seeded clients: {}",
        listener.local_addr()?,
        ids.join(", ")
    );
    axum::serve(listener, emulator.router()).await
}
