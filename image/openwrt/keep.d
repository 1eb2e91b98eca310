/etc/jnrelay/
