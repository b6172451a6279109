//! An emulator of the Entra External ID native-authentication API (V1) for one tenant.
