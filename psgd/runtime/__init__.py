"""Moving bytes and running the loops: transports, ledger, server and worker nodes, run folders."""
