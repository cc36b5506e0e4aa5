"""kswitch: a bank integration message switch for online payment gateways."""
