"""ROS ring: thin rclpy nodes. Each converts messages, calls one core method and publishes."""
