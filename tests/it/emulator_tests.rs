//! Tests of the Microsoft 365 emulator itself.
