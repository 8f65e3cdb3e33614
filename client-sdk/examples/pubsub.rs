//! Publishes an address and prints every push of the same service.
//!
//! Start a registry first (`cargo run --release --bin registry -- standalone`), then:
//! `cargo run -p client-sdk --example pubsub -- 127.0.0.1:9600`

use std::time::Duration;

use client_sdk::{Client, ClientConfig};

#[tokio::main]
async fn main() -> Result<(), client_sdk::SdkError> {
    let session = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9600".into());
    let client = Client::connect(ClientConfig::new([session])).await?;
    let mut subscriber = client.subscribe("com.example.Echo").await?;
    let publisher = client
        .publish("com.example.Echo", vec!["10.0.0.1:8080".into()])
        .await?;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = publisher.republish(vec!["10.0.0.1:8081".into()]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = publisher.unregister().await;
    });
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            update = subscriber.next() => match update {
                Some(u) => println!("{} v{}: {:?}", u.data_info_id, u.version, u.data),
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    client.close().await;
    Ok(())
}
