package main

import (
	"github.com/spf13/cobra"

	"github.com/tcpsentry/tcpsentry/internal/config"
)

func newConfigCmd() *cobra.Command {
	var path string
	var defaults bool
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (built-in defaults overlaid by --config)",
		Long: `Print the configuration tcpsentry would use: the built-in defaults, with
the file given by --config overlaid (maps merge key by key, lists replace).
A bad file is an error naming file, line and key. --defaults prints the
commented built-in defaults, a starting point for your own file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if defaults {
				_, err := cmd.OutOrStdout().Write(config.Defaults())
				return err
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			b, err := config.Marshal(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML file to overlay on the defaults")
	cmd.Flags().BoolVar(&defaults, "defaults", false, "print the commented built-in defaults")
	return cmd
}
