"""Departments: who works a mailbox, its routing strategy and capacity rules."""
