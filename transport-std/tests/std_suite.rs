mod suite;
transport_suite!(bridgechat_transport_std);
