//! How logctl reaches the brokers: [`ConnectOptions`] (bootstrap, TLS,
//! SASL, `--command-config`) made into client settings once.

use strata_client::{Admin, ClientConfig, Consumer, ConsumerBuilder, Producer, ProducerBuilder};

pub use strata_client::ConnectOptions;

pub struct Connect {
    pub client: ClientConfig,
}

impl Connect {
    pub fn from_options(options: &ConnectOptions) -> strata_client::Result<Connect> {
        Ok(Connect {
            client: options.client_config("logctl")?,
        })
    }

    pub async fn admin(&self) -> strata_client::Result<Admin> {
        Admin::with_config(self.client.clone()).await
    }

    pub fn producer(&self) -> ProducerBuilder {
        Producer::builder_for(&self.client)
    }

    pub fn consumer(&self) -> ConsumerBuilder {
        Consumer::builder_for(&self.client)
    }
}
